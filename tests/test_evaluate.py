"""Metrics on hand-computed predictions, and one fold evaluated end to end on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smile_vlm.evaluate import (accuracy, confusion_matrix, evaluate_fold, linear_probe_accuracy, macro_f1,
                                multilabel_metrics, multilabel_predictions, per_class_f1, view_weights_per_class)
from smile_vlm.train import train_fold
from test_train import CLASSES, TINY_VARIANT, make_fold_inputs, text_encoder, tiny_settings  # noqa: F401


def test_single_label_metrics_by_hand():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    confusion = confusion_matrix(y_true, y_pred, 4)
    np.testing.assert_array_equal(confusion[:3, :3], [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert confusion[3].sum() == 0 and confusion[:, 3].sum() == 0
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    f1 = per_class_f1(confusion)
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 1, FN 0 -> 0.8; class 2: TP 1, FP 0, FN 1 -> 2/3
    np.testing.assert_allclose(f1[:3], [0.5, 0.8, 2 / 3])
    assert np.isnan(f1[3])  # never true, never predicted: undefined, left out of the macro mean
    assert macro_f1(f1) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_multilabel_rule_and_metrics_by_hand():
    scores = np.array([[0.30, 0.29, 0.00],   # p ~ (0.73, 0.27, 0.00): only class 0 >= 1/3
                       [0.10, 0.10, 0.10],   # uniform: every class >= 1/3
                       [0.00, 0.00, 0.05]])  # p ~ (0.007, 0.007, 0.99): argmax only
    predicted = multilabel_predictions(scores)
    np.testing.assert_array_equal(predicted, [[1, 0, 0], [1, 1, 1], [0, 0, 1]])
    assert multilabel_predictions(scores, rule=0.5).tolist() == [[True, False, False], [True, False, False], [False, False, True]]  # argmax kept, ties go to the first

    truth = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=bool)
    metrics = multilabel_metrics(truth, predicted)
    # class 0: TP1 FP1 FN0 -> 2/3; class 1: TP1 FP0 FN1 -> 2/3; class 2: TP1 FP1 FN0 -> 2/3
    np.testing.assert_allclose(metrics["per_class_f1"], [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(metrics["per_class_accuracy"], [2 / 3, 2 / 3, 2 / 3])
    assert metrics["average_f1"] == pytest.approx(2 / 3) and metrics["average_accuracy"] == pytest.approx(2 / 3)


def test_view_weights_per_class_and_probe():
    weights = np.array([[0.2, 0.3, 0.5], [0.4, 0.3, 0.3], [1.0, 0.0, 0.0]])
    membership = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    per_class = view_weights_per_class(weights, membership)
    np.testing.assert_allclose(per_class[:2], [[0.3, 0.3, 0.4], [1.0, 0.0, 0.0]])
    assert np.isnan(per_class[2]).all()

    rng = np.random.default_rng(0)
    train_y = np.repeat([0, 1, 2], 20)
    centers = np.eye(3) * 5
    train_x = centers[train_y] + rng.normal(size=(60, 3))
    assert linear_probe_accuracy(train_x, train_y, centers, [0, 1, 2]) == 1.0
    assert linear_probe_accuracy(train_x, np.zeros(60), centers, [0, 1, 2]) is None


def test_evaluate_fold_writes_consistent_metrics(tmp_path, text_encoder):  # noqa: F811
    store, folds = make_fold_inputs(tmp_path)
    settings = tiny_settings(epochs=1)
    model = train_fold(store, folds, 0, 2, TINY_VARIANT, settings, tmp_path / "run")
    out = tmp_path / "eval" / "fold2.json"
    result = evaluate_fold(store, folds, 0, 2, model, TINY_VARIANT, {**settings, "evaluate": {"linear_probe": True}}, out)
    written = json.loads(out.read_text())
    assert written["n_test"] == 2 * 6 * 2 and written["n_train"] == 4 * 6 * 2
    assert set(written["test_subjects"]).isdisjoint(written["train_subjects"])
    matrix = np.array(written["confusion"]["matrix"])
    assert matrix.shape == (6, 6) and matrix.sum() == 24 and (matrix.sum(axis=1) == 4).all()
    assert written["accuracy"] == pytest.approx(np.trace(matrix) / 24)
    assert written["confusion"]["classes"] == CLASSES and list(written["per_class_f1"]) == CLASSES
    for row in written["view_weights"].values():
        assert len(row) == 3 and sum(row) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= written["linear_probe_accuracy"] <= 1.0
    assert result["macro_f1"] == pytest.approx(written["macro_f1"])
