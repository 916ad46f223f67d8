"""Metrics on hand-computed predictions, and one fold evaluated end to end on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest

import torch
import torch.nn.functional as F
from torch import nn

import smile_vlm.evaluate as evaluate
from smile_vlm.evaluate import evaluate_fold, single_view_scores
from smile_vlm.metrics import (accuracy, confusion_matrix, linear_probe_accuracy, macro_f1, multilabel_metrics,
                               multilabel_predictions, per_class_f1, view_weights_per_class)
from smile_vlm.models import build_model
from smile_vlm.models.smile import SmileVLM
from smile_vlm.prompts import build_text_bank
from smile_vlm.settings import resolve_settings
from smile_vlm.train import train_fold
from smile_vlm.views import view_names
from test_train import (CLASSES, CROSS_CLASSES, TINY_VARIANT, VIEWS, cross_settings, make_cross_inputs,  # noqa: F401
                        make_fold_inputs, make_store, text_encoder, tiny_settings)


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
    # at logit scale 100 (evaluate_fold always passes the model's 1/tau; 100 makes the hand sums easy)
    scores = np.array([[0.30, 0.29, 0.00],   # p ~ (0.73, 0.27, 0.00): only class 0 >= 1/3
                       [0.10, 0.10, 0.10],   # uniform: every class >= 1/3
                       [0.00, 0.00, 0.05]])  # p ~ (0.007, 0.007, 0.99): argmax only
    predicted = multilabel_predictions(scores, scale=100.0)
    np.testing.assert_array_equal(predicted, [[1, 0, 0], [1, 1, 1], [0, 0, 1]])
    assert multilabel_predictions(scores, rule=0.5, scale=100.0).tolist() == [[True, False, False], [True, False, False], [False, False, True]]  # argmax kept, ties go to the first

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


def test_probe_is_the_same_with_one_or_two_threads():
    # Embedding-sized data, where BLAS splits its sums by thread count: before the probe fixed
    # its threads, 1 and 2 threads gave coefficients differing in their last bits.
    import torch
    from threadpoolctl import threadpool_limits

    from smile_vlm.metrics import fit_probe

    rng = np.random.default_rng(0)
    train_y, test_y = rng.integers(0, 6, 216), rng.integers(0, 6, 24)
    centers = rng.normal(size=(6, 512))
    embed = (lambda y: (centers[y] * 0.3 + rng.normal(size=(len(y), 512))).astype(np.float32))
    train_x, test_x = embed(train_y), embed(test_y)
    fitted, scores = [], []
    default_threads = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpool_limits(limits=threads):
                probe = fit_probe(train_x, train_y, 1.0, 0)
                fitted.append(np.concatenate([probe.coef_.ravel(), probe.intercept_]))
                scores.append(linear_probe_accuracy(train_x, train_y, test_x, test_y))
    finally:
        torch.set_num_threads(default_threads)
    assert fitted[0].tobytes() == fitted[1].tobytes()  # bit for bit
    assert scores[0] == scores[1] and scores[0] > 0.5  # and it learned: chance is 1/6


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


def test_cross_dataset_fold_is_scored_on_the_test_store(tmp_path, text_encoder):  # noqa: F811
    train_store, test_store, folds = make_cross_inputs(tmp_path)
    model = train_fold(train_store, folds, 0, 0, TINY_VARIANT, cross_settings(), tmp_path / "run")
    settings = {**cross_settings(), "evaluate": {"linear_probe": True, "single_view": False}}
    two_way = evaluate_fold(test_store, folds, 0, 0, model, TINY_VARIANT, settings, tmp_path / "two.json")
    # BP4D-like store: 2 subjects x (T1 happiness, T8 disgust) x 2 sequences; the other tasks dropped
    assert two_way["classes"] == CROSS_CLASSES and two_way["trained_classes"] == CLASSES
    assert (two_way["train_dataset"], two_way["test_dataset"]) == ("bu4dfe", "bp4d")
    assert two_way["train_subjects"] == ["S00", "S01", "S02"] and two_way["test_subjects"] == ["S00", "S01"]
    assert two_way["n_test"] == 8 and two_way["n_train"] == 36 and "single_view" not in two_way
    matrix = np.array(two_way["confusion"]["matrix"])
    assert matrix.shape == (2, 2) and matrix.sum(axis=1).tolist() == [4, 4]
    assert two_way["accuracy"] == pytest.approx(np.trace(matrix) / 8)
    assert two_way["linear_probe_accuracy"] * 8 == pytest.approx(round(two_way["linear_probe_accuracy"] * 8))

    settings["protocol"] = {**settings["protocol"], "predict_classes": "train"}
    six_way = evaluate_fold(test_store, folds, 0, 0, model, TINY_VARIANT, settings, tmp_path / "six.json")
    matrix = np.array(six_way["confusion"]["matrix"])
    assert six_way["classes"] == CLASSES and matrix.shape == (6, 6)
    assert matrix.sum(axis=1).tolist() == [0, 4, 0, 4, 0, 0]  # true rows: disgust (1), happiness (3)
    # the class embeddings do not depend on the other classes: a sample right among six classes
    # is right between two, so the 2-way accuracy can only be higher
    assert two_way["accuracy"] >= six_way["accuracy"] == pytest.approx(np.trace(matrix) / 8)

    from smile_vlm.errors import ScanError
    with pytest.raises(ScanError, match="no test sample in this store \\(dataset 'bu4dfe'\\)"):
        evaluate_fold(train_store, folds, 0, 0, model, TINY_VARIANT, settings, tmp_path / "wrong.json")


def test_view_names_follow_the_store_views():
    assert view_names(VIEWS) == ["yaw +0", "yaw -30", "yaw +30"]
    assert view_names([{"yaw": -30.0, "pitch": 15}, {"yaw": 30, "pitch": 0}]) == ["yaw -30 pitch +15", "yaw +30"]


@pytest.mark.parametrize("name", ["smile_vlm", "facet_vlm"])
def test_single_view_scores_ignore_the_masked_views(name):
    torch.manual_seed(0)
    variant = {"model": name, "vision": {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16}, "projector": [16],
               "fusion_hidden": 8}
    model = build_model(variant, n_views=3, text_dim=12).eval()
    images = torch.rand(4, 3, 3, 16, 16)
    class_emb = F.normalize(torch.randn(5, 12), dim=-1)
    changed = images.clone()
    changed[:, 1:] = torch.rand(4, 2, 3, 16, 16)  # new pixels in views 1 and 2 only
    before, after = single_view_scores(model, images, class_emb), single_view_scores(model, changed, class_emb)
    assert before.shape == (3, 4, 5)
    torch.testing.assert_close(before[0], after[0], rtol=0, atol=1e-6)  # view 0 alone: untouched
    assert (before[1] - after[1]).abs().max() > 1e-3  # the changed views do change their own scores
    with torch.no_grad():
        multi_before, multi_after = model.class_scores(images, class_emb), model.class_scores(changed, class_emb)
    assert (multi_before - multi_after).abs().max() > 1e-3  # while the multi-view scores change
    if name == "smile_vlm":
        # one view left, Eq. 7 gives it weight 1: the fused embedding is that view's embedding
        with torch.no_grad():
            z = F.normalize(model.encode_views(images), dim=-1)
        torch.testing.assert_close(before, torch.einsum("bvd,kd->vbk", z, class_emb), rtol=0, atol=1e-5)


class OracleEncoder(nn.Module):
    """Reads the class from the position of a view's bright 4x4 square (make_store draws it at row
    2k) and returns that class's text embedding: the views carry exactly the class they show."""

    image_size, mean, std, out_dim = 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 12

    def __init__(self, class_table: torch.Tensor):
        super().__init__()
        self.register_buffer("class_table", class_table)

    def preprocess(self, images):
        return images

    def forward(self, images):
        batch, n_views = images.shape[:2]
        brightness = F.avg_pool2d(images.sum(dim=2).flatten(0, 1).unsqueeze(1), 4, stride=1).flatten(1)
        rows = brightness.argmax(dim=1) // brightness.new_tensor(13).long()
        return self.class_table[rows // 2].view(batch, n_views, -1)


def fold_identity(store, folds, settings, repeat, fold) -> dict:
    """What train_fold records about the fold it trained (checked by evaluate_fold)."""
    from smile_vlm.folds import fold_samples
    from smile_vlm.store import open_store

    resolved = resolve_settings(settings)
    split = fold_samples(store, folds, repeat, fold, resolved["protocol"])
    return {"settings": resolved, "experiment": resolved["experiment"], "repeat": repeat, "fold": fold,
            "train_subjects": split["train_subjects"], "store_settings_hash": open_store(store).attrs["settings_hash"]}


def test_single_view_metrics_show_which_view_carries_the_class(tmp_path, text_encoder, monkeypatch):  # noqa: F811
    # view 0 (yaw 0) shows the sample's class, views 1 and 2 (yaw -30, +30) the next class
    store = make_store(tmp_path, n_subjects=3, view_class=lambda k, v: k if v == 0 else (k + 1) % 6)
    folds = tmp_path / "folds.csv"
    from smile_vlm.folds import write_folds
    write_folds(store, {"folds": 3, "classes": CLASSES}, folds)
    settings = {**tiny_settings(), "evaluate": {"linear_probe": False}}
    class_table = build_text_bank(resolve_settings(settings), CLASSES).class_embeddings()
    model = SmileVLM(OracleEncoder(class_table), n_views=3, fusion_hidden=8)
    last = model.fusion.score[-1]
    nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)  # equal fusion weights 1/3
    saved = {"classes": CLASSES, "variant": {"model": "smile_vlm"}, "views": VIEWS, "multi_label": False,
             **fold_identity(store, folds, settings, 0, 0)}
    monkeypatch.setattr(evaluate, "load_trained", lambda checkpoint, device: (model.eval(), saved))

    result = evaluate_fold(store, folds, 0, 0, "oracle.pt", None, settings, tmp_path / "eval.json")
    single = result["single_view"]
    assert list(single) == ["yaw +0", "yaw -30", "yaw +30"]
    assert single["yaw +0"]["accuracy"] == 1.0 and single["yaw +0"]["macro_f1"] == 1.0
    assert single["yaw -30"]["accuracy"] == single["yaw +30"]["accuracy"] == 0.0
    assert np.array(single["yaw -30"]["confusion"]["matrix"]).trace() == 0
    # by hand: fused = (t_k + 2 t_(k+1)) / 3 for every sample of class k
    t = F.normalize(class_table.float(), dim=-1)
    fused = (t + 2 * t.roll(-1, dims=0)) / 3
    hand = ((F.normalize(fused, dim=-1) @ t.T).argmax(dim=1) == torch.arange(6)).float().mean().item()
    assert result["accuracy"] == pytest.approx(hand) and result["accuracy"] != single["yaw +0"]["accuracy"]
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["single_view"]["yaw +0"]["per_class_f1"] == {name: 1.0 for name in CLASSES}


ME_CLASSES = ["positive", "negative", "surprise", "repression", "others"]
FACET_VARIANT = {"model": "facet_vlm", "projector": [16], "facet": {"heads": 2}}


@pytest.mark.parametrize("variant", [TINY_VARIANT, FACET_VARIANT], ids=["smile_vlm", "facet_vlm"])
def test_multilabel_store_trains_and_evaluates_end_to_end(tmp_path, text_encoder, monkeypatch, variant):  # noqa: F811
    import smile_vlm.models.facet as facet

    store, folds = make_fold_inputs(tmp_path, n_subjects=3, multi_label=True, classes=ME_CLASSES)
    settings = {**tiny_settings(epochs=1), "classes": ME_CLASSES}
    ce_targets = []
    original = facet.prompt_classification_loss
    monkeypatch.setattr(facet, "prompt_classification_loss",
                        lambda scores, labels, tau: ce_targets.append(labels.clone()) or original(scores, labels, tau))
    model = train_fold(store, folds, 0, 0, variant, settings, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(record["total"]) for record in log)
    if variant is FACET_VARIANT:
        # CE over multi-hot rows: every sample of make_store has its class and the next one
        assert ce_targets and all(t.shape == (8, 5) and (t.sum(dim=1) == 2).all() for t in ce_targets)
        assert np.isfinite(log[-1]["ce"]) and log[-1]["ce"] > 0
    else:
        assert not ce_targets

    result = evaluate_fold(store, folds, 0, 0, model, variant, {**settings, "evaluate": {"linear_probe": True}},
                           tmp_path / "eval.json")
    assert result["multi_label"] and result["n_test"] == 10  # 1 test subject x 5 classes x 2 levels
    for metrics in [result, *result["single_view"].values()]:
        assert list(metrics["per_class_f1"]) == ME_CLASSES
        accuracies = list(metrics["per_class_accuracy"].values())
        assert all(a * 10 == pytest.approx(round(a * 10)) for a in accuracies)  # counts over 10 samples
        assert metrics["average_accuracy"] == pytest.approx(np.mean(accuracies))
    assert list(result["single_view"]) == ["yaw +0", "yaw -30", "yaw +30"]
    assert 0.0 <= result["linear_probe_accuracy"] <= 1.0
