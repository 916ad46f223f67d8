"""Metrics of a fold's zero-shot scores and of the linear probe (numpy and sklearn; pure functions).

Single-label metrics: accuracy, per-class F1 from the confusion matrix (rows = true class,
columns = predicted), macro-F1 = mean of the per-class F1 over the classes that occur in the
truth or the predictions of the fold (sklearn's ``average="macro"`` without ``labels``; a class
absent from both has no F1 and is written as null).

Multi-label (4DME, five binary labels): the scores are turned into label sets by the rule in
``settings["evaluate"]["multilabel_rule"]``:

* ``"above_uniform"`` (default): p = softmax(scale * scores); a class is predicted when
  p_k >= 1/K, i.e. more likely than under a uniform guess. The argmax is always predicted, so every
  sample gets at least one label.
* a number t: the class is predicted when p_k >= t (plus the argmax).

``scale`` is the logit scale the model was trained with, 1/tau of its loss settings (tau = 0.07:
14.29), read from the checkpoint, never a setting of the evaluation: the label sets change with
the scale, and only the training scale is the one the scores were shaped for. Each evaluation
JSON records the rule and the scale under ``multilabel_decision``.

Per class: F1 and accuracy (TP + TN) / N of the binary decision; the JSON also holds their
averages over classes (the paper's Table V reports per-class F1 and accuracy and their average).
"""

from __future__ import annotations

import numpy as np
import torch

from smile_vlm.losses import CLIP_TEMPERATURE


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean())


def f1_from_counts(true_positive, false_positive, false_negative) -> np.ndarray:
    """2TP / (2TP + FP + FN) per class; NaN where the class is neither true nor predicted."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (true_positive, false_positive, false_negative))
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def per_class_f1(confusion: np.ndarray) -> np.ndarray:
    tp = np.diag(confusion)
    return f1_from_counts(tp, confusion.sum(axis=0) - tp, confusion.sum(axis=1) - tp)


def macro_f1(per_class: np.ndarray) -> float:
    defined = per_class[~np.isnan(per_class)]
    return float(defined.mean()) if defined.size else float("nan")


def multilabel_predictions(scores, rule="above_uniform", scale: float = 1 / CLIP_TEMPERATURE) -> np.ndarray:
    """(N, K) bool label sets from (N, K) scores (see the module doc for the rule)."""
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    probabilities = torch.softmax(scale * scores, dim=1).numpy()
    threshold = 1.0 / scores.shape[1] if rule == "above_uniform" else float(rule)
    predicted = probabilities >= threshold
    predicted[np.arange(len(predicted)), probabilities.argmax(axis=1)] = True
    return predicted


def multilabel_metrics(y_true, y_pred) -> dict:
    """Per-class F1 and accuracy of binary decisions, and their averages over classes."""
    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    tp = (y_true & y_pred).sum(axis=0)
    fp = (~y_true & y_pred).sum(axis=0)
    fn = (y_true & ~y_pred).sum(axis=0)
    f1 = f1_from_counts(tp, fp, fn)
    per_class_accuracy = (y_true == y_pred).mean(axis=0)
    return {"per_class_f1": f1, "per_class_accuracy": per_class_accuracy,
            "average_f1": macro_f1(f1), "average_accuracy": float(per_class_accuracy.mean())}


# The probe's solve. BLAS and OpenMP split sums by thread count, so the same embeddings fitted
# with 1 or 2 threads gave coefficients that differ in their last bits and, through lbfgs's
# loose default tolerance (1e-4), a test sample on the other side of the boundary. One thread
# fixes the summation order; float64 and a tight tolerance bring the solve to the one minimum
# of the L2-regularised loss, so what is left of a machine's rounding moves no prediction but
# one that lies on the boundary.
PROBE_TOL = 1e-8
PROBE_MAX_ITER = 10000


def linear_probe_accuracy(train_x, train_y, test_x, test_y, c: float = 1.0, seed: int = 0) -> float | None:
    """Accuracy of a multinomial logistic regression; None when the train split has one class.

    The same embeddings give the same accuracy whatever the BLAS/OpenMP thread count (PROBE_TOL).
    """
    from threadpoolctl import threadpool_limits

    if len(np.unique(train_y)) < 2:
        return None
    probe = fit_probe(train_x, train_y, c, seed)
    with threadpool_limits(limits=1):
        predicted = probe.predict(np.asarray(test_x, dtype=np.float64))
    return accuracy(test_y, predicted)


def fit_probe(train_x, train_y, c: float = 1.0, seed: int = 0):
    """The fitted probe (sklearn LogisticRegression, lbfgs): float64, one thread, PROBE_TOL."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    probe = LogisticRegression(C=c, tol=PROBE_TOL, max_iter=PROBE_MAX_ITER, random_state=seed)
    with threadpool_limits(limits=1):
        return probe.fit(np.asarray(train_x, dtype=np.float64), train_y)


def multilabel_probe_accuracy(train_x, train_y, test_x, test_y, c: float = 1.0, seed: int = 0) -> float:
    """Mean per-class accuracy of one binary probe per class (constant where train has one value)."""
    train_y, test_y = np.asarray(train_y, dtype=bool), np.asarray(test_y, dtype=bool)
    per_class = []
    for k in range(train_y.shape[1]):
        if len(np.unique(train_y[:, k])) < 2:
            predicted = np.full(len(test_y), train_y[0, k])
            per_class.append(accuracy(test_y[:, k], predicted))
        else:
            per_class.append(linear_probe_accuracy(train_x, train_y[:, k], test_x, test_y[:, k], c, seed))
    return float(np.mean(per_class))


def view_weights_per_class(weights, membership) -> np.ndarray:
    """(K, V) mean fusion weights of the samples of each class; NaN rows for absent classes.

    ``membership`` is (N, K) bool: one-hot true class, or the multi-hot labels.
    """
    weights, membership = np.asarray(weights, dtype=np.float64), np.asarray(membership, dtype=bool)
    counts = membership.sum(axis=0)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, membership.T.astype(np.float64) @ weights / counts, np.nan)


def zero_shot_metrics(scores, labels, classes: list[str], multi_label: bool, options: dict,
                      scale: float | None = None) -> dict:
    """The zero-shot metrics of one set of class scores (multi-view, or one view alone).

    Single-label: accuracy, macro_f1, per_class_f1, confusion. Multi-label: per_class_f1,
    per_class_accuracy, average_f1, average_accuracy (macro_f1 / accuracy repeat the averages),
    the label sets decided by ``options["multilabel_rule"]`` at ``scale`` (the training 1/tau).
    """
    if multi_label:
        if scale is None:
            raise ValueError("a multi-label decision needs the training logit scale 1/tau")
        predicted = multilabel_predictions(scores, options["multilabel_rule"], scale)
        metrics = multilabel_metrics(np.asarray(labels, dtype=bool), predicted)
        return {
            "per_class_f1": dict(zip(classes, metrics["per_class_f1"].tolist())),
            "per_class_accuracy": dict(zip(classes, metrics["per_class_accuracy"].tolist())),
            "average_f1": metrics["average_f1"], "average_accuracy": metrics["average_accuracy"],
            "macro_f1": metrics["average_f1"], "accuracy": metrics["average_accuracy"],
        }
    predicted = np.asarray(scores).argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, len(classes))
    f1 = per_class_f1(confusion)
    return {
        "accuracy": accuracy(labels, predicted), "macro_f1": macro_f1(f1),
        "per_class_f1": dict(zip(classes, f1.tolist())),
        "confusion": {"classes": classes, "rows": "true", "columns": "predicted", "matrix": confusion.tolist()},
    }
