"""Evaluation of one trained fold: zero-shot metrics, a linear probe, learned view weights.

Zero-shot (SMILE-VLM §III-D): the prediction is argmax_k of ``model.class_scores`` against the
prompt-ensembled class embeddings (``TextBank.class_embeddings``) of the test subjects' samples.

Single-label metrics: accuracy, per-class F1 from the confusion matrix (rows = true class,
columns = predicted), macro-F1 = mean of the per-class F1 over the classes that occur in the
truth or the predictions of the fold (sklearn's ``average="macro"`` without ``labels``; a class
absent from both has no F1 and is written as null).

Multi-label (4DME, five binary labels): the scores are turned into label sets by the rule in
``settings["evaluate"]["multilabel_rule"]``:

* ``"above_uniform"`` (default): p = softmax(scale * scores); a class is predicted when
  p_k >= 1/K, i.e. more likely than under a uniform guess. The argmax is always predicted, so every
  sample gets at least one label. ``scale`` = 100 is CLIP's zero-shot logit scale for cosines.
* a number t: the class is predicted when p_k >= t (plus the argmax).

Per class: F1 and accuracy (TP + TN) / N of the binary decision; the JSON also holds their
averages over classes (the paper's Table V reports per-class F1 and accuracy and their average).

Linear probe: logistic regression (sklearn, lbfgs) on L2-normalised frozen fused embeddings of
the fold's train split, scored on its test split (multi-label: one binary probe per class,
mean per-class accuracy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from smile_vlm import atomic
from smile_vlm.augment import Augmenter
from smile_vlm.folds import fold_samples
from smile_vlm.train import FoldTargets, build_text_bank, image_input, load_trained, resolve_settings, select_device

DEFAULT_EVALUATE = {
    "linear_probe": True,  # also fit the logistic-regression probe on frozen fused embeddings
    "batch_size": 64,  # inference batch
    "multilabel_rule": "above_uniform",  # or a probability threshold in (0, 1)
    "score_scale": 100.0,  # softmax scale applied to the cosine scores (CLIP zero-shot)
    "probe_c": 1.0,  # inverse L2 regularisation strength of the probe
}


# --------------------------------------------------------------------------- metrics (pure)

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


def multilabel_predictions(scores, rule="above_uniform", scale: float = 100.0) -> np.ndarray:
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


def linear_probe_accuracy(train_x, train_y, test_x, test_y, c: float = 1.0, seed: int = 0) -> float | None:
    """Accuracy of a multinomial logistic regression; None when the train split has one class."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        return None
    probe = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    probe.fit(train_x, train_y)
    return accuracy(test_y, probe.predict(test_x))


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


# --------------------------------------------------------------------------- one fold

@torch.no_grad()
def _embed(model, dataset, augmenter: Augmenter, class_emb, device, batch_size: int, targets: FoldTargets):
    """Fused embeddings, fusion weights, class scores and targets of every sample of ``dataset``."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    fused, weights, scores, labels = [], [], [], []
    for batch in loader:
        images = augmenter.clean(batch["images"], device)
        output = model(images)
        fused.append(torch.nn.functional.normalize(output["z_fused"].float(), dim=-1).cpu())
        weights.append(output["weights"].float().cpu())
        scores.append(model.class_scores(images, class_emb).float().cpu())
        labels.append(targets.labels(batch))
    return (torch.cat(fused).numpy(), torch.cat(weights).numpy(), torch.cat(scores).numpy(),
            torch.cat(labels).numpy())


def evaluate_fold(store_path, folds_csv, repeat: int, fold: int, checkpoint, variant: dict | None,
                  settings: dict | None, out_json) -> dict:
    """Zero-shot and linear-probe metrics of one fold's test subjects, written atomically as JSON.

    ``checkpoint`` is the ``model.pt`` of train_fold (it carries the variant it was built with;
    ``variant`` is only recorded). ``settings``: the same sections as train_fold, plus
    ``evaluate`` (DEFAULT_EVALUATE).
    """
    from smile_vlm.store import StoreDataset, open_store

    resolved = resolve_settings(settings)
    options = {**DEFAULT_EVALUATE, **resolved["evaluate"]}
    device = select_device(resolved["train"]["device"])
    if resolved["train"]["threads"]:
        torch.set_num_threads(int(resolved["train"]["threads"]))

    split = fold_samples(store_path, folds_csv, repeat, fold, resolved["protocol"])
    classes = split["classes"]
    store_attrs = open_store(store_path).attrs
    multi_label = bool(store_attrs["multi_label"])
    targets = FoldTargets(split["store_classes"], classes, multi_label)
    label_mode = "multi" if multi_label else "single"

    model, saved = load_trained(checkpoint, device)
    if list(saved["classes"]) != classes:
        raise ValueError(f"{checkpoint}: trained on classes {saved['classes']}, evaluating {classes}")
    _, text_bank = build_text_bank(resolved, classes)
    class_emb = text_bank.class_embeddings().to(device)
    size, mean, std = image_input(model)
    augmenter = Augmenter(size, None, mean, std)
    batch_size = int(options["batch_size"])

    test = _embed(model, StoreDataset(store_path, split["test"], label_mode), augmenter, class_emb, device,
                  batch_size, targets)
    test_fused, test_weights, test_scores, test_labels = test

    result = {
        "k": _job_number(folds_csv, repeat, fold),
        "repeat": int(repeat), "fold": int(fold), "checkpoint": str(checkpoint),
        "variant": (variant or {}).get("name") or saved["variant"].get("name"),
        "classes": classes, "views": list(store_attrs["views"]), "multi_label": multi_label,
        "n_train": int(len(split["train"])), "n_test": int(len(split["test"])),
        "train_subjects": split["train_subjects"], "test_subjects": split["test_subjects"],
        "protocol": resolved["protocol"], "evaluate": options,
    }
    if multi_label:
        truth = test_labels.astype(bool)
        predicted = multilabel_predictions(test_scores, options["multilabel_rule"], options["score_scale"])
        metrics = multilabel_metrics(truth, predicted)
        result.update({
            "per_class_f1": dict(zip(classes, metrics["per_class_f1"].tolist())),
            "per_class_accuracy": dict(zip(classes, metrics["per_class_accuracy"].tolist())),
            "average_f1": metrics["average_f1"], "average_accuracy": metrics["average_accuracy"],
            "macro_f1": metrics["average_f1"], "accuracy": metrics["average_accuracy"],
        })
        membership = truth
    else:
        predicted = test_scores.argmax(axis=1)
        confusion = confusion_matrix(test_labels, predicted, len(classes))
        f1 = per_class_f1(confusion)
        result.update({
            "accuracy": accuracy(test_labels, predicted), "macro_f1": macro_f1(f1),
            "per_class_f1": dict(zip(classes, f1.tolist())),
            "confusion": {"classes": classes, "rows": "true", "columns": "predicted",
                          "matrix": confusion.tolist()},
        })
        membership = np.eye(len(classes), dtype=bool)[test_labels]

    weights = view_weights_per_class(test_weights, membership)
    result["view_weights"] = {name: row.tolist() for name, row in zip(classes, weights)}

    result["linear_probe_accuracy"] = None
    if options["linear_probe"]:
        train_fused, _, _, train_labels = _embed(model, StoreDataset(store_path, split["train"], label_mode),
                                                 augmenter, class_emb, device, batch_size, targets)
        seed = int(resolved["train"]["seed"])
        probe = multilabel_probe_accuracy if multi_label else linear_probe_accuracy
        result["linear_probe_accuracy"] = probe(train_fused, train_labels, test_fused, test_labels,
                                                float(options["probe_c"]), seed)

    atomic.write_json(out_json, _nan_to_none(result))
    return result


def _job_number(folds_csv, repeat: int, fold: int) -> int:
    from smile_vlm.folds import read_folds

    folds = read_folds(folds_csv)
    rows = folds[(folds["repeat"] == int(repeat)) & (folds["fold"] == int(fold))]
    return int(rows["k"].iloc[0])


def _nan_to_none(value):
    """JSON has no NaN: an undefined metric (a class absent from the fold) is written as null."""
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
