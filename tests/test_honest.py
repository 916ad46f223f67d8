"""Numbers that mean what they say: a label-free mode with no labels in it, BatchNorm statistics of
the views evaluation sees, a frozen text tower, Table V decided at the training scale, every
evaluation bound to its own fold, and kills that lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from smile_vlm.errors import ScanError
from smile_vlm.evaluate import evaluate_fold
from smile_vlm.metrics import multilabel_predictions, zero_shot_metrics
from smile_vlm.models import build_model
from smile_vlm.models.common import running_stats_frozen
from smile_vlm.checkpoint import CHECKPOINT_NAME, LOG_NAME, MODEL_NAME
from smile_vlm.prompts import write_text_bank
from smile_vlm.train import train_fold
from test_train import (TINY_VARIANT, HashedTextEncoder, make_fold_inputs,  # noqa: F401
                        text_encoder, tiny_settings)

FACET_VARIANT = {"model": "facet_vlm", "projector": [16], "facet": {"heads": 2}}
FACET_PROMPT = {"model": "facet_vlm", "projector": [16], "facet": {"heads": 2, "ce_weight": 0.0,
                                                                   "mtgf_align_weight": 1.0}}
ME_CLASSES = ["positive", "negative", "surprise", "repression", "others"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def permuted_copy(store, out, seed=0):
    """The same store with its labels shuffled over the samples (images untouched)."""
    import shutil

    shutil.copytree(store, out)
    root = zarr.open_group(str(out), mode="r+")
    order = np.random.default_rng(seed).permutation(root["label"].shape[0])
    label, labels = root["label"][:], root["labels"][:]
    assert (label[order] != label).any()
    root["label"][:] = label[order]
    root["labels"][:] = labels[order]
    return out


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


# --------------------------------------------------------------------------- label-free mode

@pytest.mark.parametrize("variant", [TINY_VARIANT, FACET_VARIANT], ids=["smile_vlm", "facet_vlm_supervised"])
def test_pseudo_mode_never_sees_a_label(tmp_path, text_encoder, variant):  # noqa: F811
    store, folds = make_fold_inputs(tmp_path)
    shuffled = permuted_copy(store, tmp_path / "shuffled.zarr")
    pseudo = {**tiny_settings(epochs=2), "prompts": {"source": "pseudo"}}
    original = load(train_fold(store, folds, 0, 0, variant, pseudo, tmp_path / "pseudo"))["model"]
    permuted = load(train_fold(shuffled, folds, 0, 0, variant, pseudo, tmp_path / "pseudo_shuffled"))["model"]
    assert same_weights(original, permuted)  # bit for bit, on CPU

    # the control: with labels choosing the prompts (and FACET's cross-entropy) the shuffle shows
    label = tiny_settings(epochs=2)
    with_labels = load(train_fold(store, folds, 0, 0, variant, label, tmp_path / "label"))["model"]
    with_shuffled = load(train_fold(shuffled, folds, 0, 0, variant, label, tmp_path / "label_shuffled"))["model"]
    assert not same_weights(with_labels, with_shuffled)


def test_pseudo_mode_trains_facet_cross_entropy_on_pseudo_labels(tmp_path, text_encoder, monkeypatch):  # noqa: F811
    import smile_vlm.models.facet as facet
    import smile_vlm.train as train

    store, folds = make_fold_inputs(tmp_path)
    seen, predicted = [], []
    ce = facet.prompt_classification_loss
    monkeypatch.setattr(facet, "prompt_classification_loss",
                        lambda scores, labels, tau: seen.append(labels.clone()) or ce(scores, labels, tau))
    zero_shot = train.zero_shot_predictions
    monkeypatch.setattr(train, "zero_shot_predictions", lambda *a, **k: predicted.append(zero_shot(*a, **k)) or predicted[-1])
    settings = {**tiny_settings(epochs=1, log_every=0), "prompts": {"source": "pseudo"}}
    train_fold(store, folds, 0, 0, FACET_VARIANT, settings, tmp_path / "run")
    used = torch.cat(seen)
    assert len(used) == len(predicted[0]) and sorted(used.tolist()) == sorted(predicted[0].tolist())


# --------------------------------------------------------------------------- FACET like for like

def test_supervision_is_named_per_variant():
    smile = build_model({**TINY_VARIANT, "name": "smile_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2}}, 3, 12)
    supervised = build_model({**FACET_VARIANT, "name": "facet_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2}}, 3, 12)
    prompt = build_model({**FACET_PROMPT, "name": "facet_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2}}, 3, 12)
    assert smile.supervision("label") == "class prompts (labels)"
    assert smile.supervision("pseudo") == "pseudo-label prompts (label-free)"
    assert supervised.supervision("label") == "cross-entropy on labels + class prompts (labels)"
    assert supervised.supervision("pseudo") == "cross-entropy on pseudo-labels + pseudo-label prompts (label-free)"
    assert prompt.supervision("label") == "class prompts (labels)"
    assert smile.learns_view_weights and not supervised.learns_view_weights


def test_prompt_aligned_facet_has_no_cross_entropy_and_trains_its_text_guided_fusion():
    torch.manual_seed(0)
    model = build_model({**FACET_PROMPT, "name": "facet_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2,
                                                                         "image_size": 16}}, 3, 12)
    views = torch.rand(6, 3, 3, 16, 16)
    text = nn.functional.normalize(torch.randn(6, 12), dim=-1)
    classes = nn.functional.normalize(torch.randn(4, 12), dim=-1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    terms = model.training_losses(views, views, views, text, classes, labels)
    assert terms["ce"].item() == 0.0 and terms["mtgf_align"].item() > 0
    terms["total"].backward()
    assert model.mtgf.attention.in_proj_weight.grad.abs().sum() > 0
    # the labels do not enter: other labels, same loss
    model.zero_grad()
    again = model.training_losses(views, views, views, text, classes, torch.tensor([3, 3, 3, 0, 0, 0]))
    assert again["total"].item() == pytest.approx(terms["total"].item(), abs=1e-6)


# --------------------------------------------------------------------------- BatchNorm, text tower

def test_running_statistics_come_from_the_clean_views_only():
    torch.manual_seed(0)
    variant = {"model": "smile_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16},
               "projector": [16], "loss": {"alpha": 1.0}}
    model = build_model(variant, 3, 12).train()
    reference = build_model(variant, 3, 12).train()
    reference.load_state_dict(model.state_dict())
    clean = torch.rand(8, 3, 3, 16, 16)
    augmented_a, augmented_b = clean * 3 + 2, clean * -5  # far from the clean statistics
    text = nn.functional.normalize(torch.randn(8, 12), dim=-1)
    model.training_losses(augmented_a, augmented_b, clean, text, None, None)
    with torch.no_grad():
        reference.encode_views(clean)  # one training-mode pass over the clean views alone
    buffers = [name for name, _ in model.named_buffers() if "running" in name]
    assert buffers
    for name, value in model.named_buffers():
        if "running" in name:
            torch.testing.assert_close(value, dict(reference.named_buffers())[name], rtol=0, atol=1e-6, msg=name)
    with running_stats_frozen(model):
        before = {n: b.clone() for n, b in model.named_buffers()}
        model.encode_views(augmented_a)
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())


@pytest.mark.parametrize("variant", [TINY_VARIANT, FACET_PROMPT], ids=["smile_vlm", "facet_vlm_prompt"])
def test_every_vision_parameter_learns(tmp_path, text_encoder, monkeypatch, variant):  # noqa: F811
    """A vision encoder left at its initialisation (a zero learning rate for it, a detached
    feature, a parameter outside the optimiser) would still reach well above chance on the
    synthetic renders through the projector alone (tests/test_learning.py): catch it here."""
    import smile_vlm.train as train

    initial = {}
    build = train.build_model

    def recording(*args, **kwargs):
        model = build(*args, **kwargs)
        initial.update({name: p.detach().clone() for name, p in model.named_parameters()})
        return model

    monkeypatch.setattr(train, "build_model", recording)
    store, folds = make_fold_inputs(tmp_path)
    trained = load(train_fold(store, folds, 0, 0, variant, tiny_settings(epochs=1), tmp_path / "run"))["model"]
    vision = [name for name in initial if name.startswith("encoder.vision_encoder.")]
    assert vision and len(initial) == len([n for n in trained if n in initial])
    unchanged = [name for name, value in initial.items() if torch.equal(value, trained[name])]
    assert not unchanged, f"parameters that never moved: {unchanged}"


class GradientTextEncoder(HashedTextEncoder):
    """A text tower that would let gradients through: no no_grad, a trainable parameter."""

    def encode(self, texts):
        counts = torch.stack([torch.bincount(torch.tensor([hash(t[i:i + 3]) % self.buckets for i in range(len(t) - 2)]),
                                             minlength=self.buckets).float() for t in texts])
        return nn.functional.normalize(self.projection(counts), dim=-1)


def test_text_tower_receives_no_gradient_and_stays_unchanged(tmp_path, monkeypatch):
    import smile_vlm.models.encoders as encoders

    tower = GradientTextEncoder()
    assert all(p.requires_grad for p in tower.parameters())
    monkeypatch.setattr(encoders, "load_text_encoder", lambda spec=None: tower)
    before = {name: p.detach().clone() for name, p in tower.named_parameters()}
    store, folds = make_fold_inputs(tmp_path)
    for variant in (TINY_VARIANT, FACET_VARIANT):
        train_fold(store, folds, 0, 0, variant, tiny_settings(epochs=1), tmp_path / variant["model"])
        for name, p in tower.named_parameters():
            assert p.grad is None and torch.equal(p, before[name]), name


# --------------------------------------------------------------------------- Table V decision

def test_multilabel_decision_is_made_at_the_training_scale():
    scores = np.array([[0.30, 0.25, 0.10, 0.05, 0.00]])
    at_training = multilabel_predictions(scores, "above_uniform", 1 / 0.07)
    at_clip = multilabel_predictions(scores, "above_uniform", 100.0)
    assert at_training.tolist() != at_clip.tolist()  # the scale matters, so it must not be a free knob
    labels = np.array([[1, 1, 0, 0, 0]])
    options = {"multilabel_rule": "above_uniform"}
    metrics = zero_shot_metrics(scores, labels, ME_CLASSES, True, options, scale=1 / 0.07)
    assert metrics["per_class_f1"]["negative"] == (1.0 if at_training[0, 1] else 0.0)
    with pytest.raises(ValueError, match="training logit scale"):
        zero_shot_metrics(scores, labels, ME_CLASSES, True, options)


def test_editing_score_scale_cannot_change_the_decision(tmp_path, text_encoder):  # noqa: F811
    store, folds = make_fold_inputs(tmp_path, n_subjects=3, multi_label=True, classes=ME_CLASSES)
    settings = {**tiny_settings(epochs=1), "classes": ME_CLASSES, "experiment": "4dme"}
    model = train_fold(store, folds, 0, 0, TINY_VARIANT, settings, tmp_path / "run")
    evaluation = {**settings, "evaluate": {"linear_probe": False, "single_view": False}}
    result = evaluate_fold(store, folds, 0, 0, model, TINY_VARIANT, evaluation, tmp_path / "a.json")
    assert result["multilabel_decision"]["rule"] == "above_uniform"
    assert result["multilabel_decision"]["scale"] == pytest.approx(1 / 0.07)
    written = json.loads((tmp_path / "a.json").read_text())
    assert written["multilabel_decision"] == result["multilabel_decision"]
    for scale in (100.0, 14.285714285714286):
        edited = {**settings, "evaluate": {"linear_probe": False, "single_view": False, "score_scale": scale}}
        with pytest.raises(ValueError, match="score_scale is no longer a setting"):
            evaluate_fold(store, folds, 0, 0, model, TINY_VARIANT, edited, tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


# --------------------------------------------------------------------------- fold binding

def test_evaluation_refuses_another_folds_model(tmp_path, text_encoder):  # noqa: F811
    store, folds = make_fold_inputs(tmp_path)
    settings = {**tiny_settings(epochs=1), "experiment": "bu4dfe"}
    fold1 = train_fold(store, folds, 0, 1, TINY_VARIANT, settings, tmp_path / "fold1")
    evaluation = {**settings, "evaluate": {"linear_probe": False, "single_view": False}}
    with pytest.raises(ScanError) as error:
        evaluate_fold(store, folds, 0, 0, fold1, TINY_VARIANT, evaluation, tmp_path / "fold0.json")
    message = str(error.value)
    assert "\n" not in message and str(fold1) in message
    assert "experiment 'bu4dfe' repeat 0 fold 1" in message and "experiment 'bu4dfe' repeat 0 fold 0" in message
    assert not (tmp_path / "fold0.json").exists()

    other = {**evaluation, "experiment": "bu3dfe_subset1"}
    with pytest.raises(ScanError, match="differs in experiment"):
        evaluate_fold(store, folds, 0, 1, fold1, TINY_VARIANT, other, tmp_path / "other.json")
    # the same fold's own inputs are accepted
    assert evaluate_fold(store, folds, 0, 1, fold1, TINY_VARIANT, evaluation, tmp_path / "fold1.json")["fold"] == 1


def test_evaluation_refuses_a_model_of_another_store(tmp_path, text_encoder):  # noqa: F811
    from smile_vlm.store import open_store

    store, folds = make_fold_inputs(tmp_path)
    settings = tiny_settings(epochs=1)
    model = train_fold(store, folds, 0, 0, TINY_VARIANT, settings, tmp_path / "run")
    import shutil

    rerendered = tmp_path / "rerendered.zarr"
    shutil.copytree(store, rerendered)
    root = zarr.open_group(str(rerendered), mode="r+")
    root.attrs["settings_hash"] = "0" * 64
    assert open_store(rerendered).attrs["settings_hash"] != open_store(store).attrs["settings_hash"]
    with pytest.raises(ScanError, match="differs in store_settings_hash"):
        evaluate_fold(rerendered, folds, 0, 0, model, TINY_VARIANT,
                      {**settings, "evaluate": {"linear_probe": False, "single_view": False}}, tmp_path / "e.json")


# --------------------------------------------------------------------------- kill -9

KILLER = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from smile_vlm import atomic
    import smile_vlm.train as train

    store, folds, out, bank, settings, variant, when = sys.argv[1:]
    settings, variant = json.loads(settings), json.loads(variant)
    saves = {"n": 0}

    def dying_save(obj, path, *args, **kwargs):
        saves["n"] += 1
        if when == "during_checkpoint" and saves["n"] == 2:
            with open(path, "wb") as handle:  # half a checkpoint, as a kill mid-write leaves it
                handle.write(b"PK\\x03\\x04 partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, path, *args, **kwargs)

    def dying_log(target, text):
        if when == "before_log" and str(target).endswith("train_log.jsonl") and text.count("\\n") == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write_text(target, text)

    real_save, real_write_text = torch.save, atomic.write_text
    torch.save = dying_save
    atomic.write_text = dying_log
    train.train_fold(store, folds, 0, 0, variant, settings, out, text_bank_file=bank)
""")


@pytest.mark.parametrize("when", ["during_checkpoint", "before_log"])
def test_kill_9_leaves_no_temp_file_and_a_gap_free_log(tmp_path, text_encoder, when):  # noqa: F811
    store, folds = make_fold_inputs(tmp_path)
    settings = tiny_settings(epochs=3, log_every=0)
    bank = tmp_path / "bank.pt"
    write_text_bank(settings, bank)
    out = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent), *sys.path])}
    killed = subprocess.run([sys.executable, str(script), str(store), str(folds), str(out), str(bank),
                             json.dumps(settings), json.dumps(TINY_VARIANT), when],
                            capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = sorted(p.name for p in out.iterdir())
    if when == "during_checkpoint":
        assert any(name.startswith(f".{CHECKPOINT_NAME}.tmp-") for name in left), left
    else:  # the second epoch's checkpoint is on disk, its log line is not
        assert load(out / CHECKPOINT_NAME)["epoch"] == 2
        assert len((out / LOG_NAME).read_text().splitlines()) == 1

    train_fold(store, folds, 0, 0, TINY_VARIANT, settings, out, text_bank_file=bank)
    assert sorted(p.name for p in out.iterdir()) == sorted([CHECKPOINT_NAME, LOG_NAME, MODEL_NAME])
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [record["epoch"] for record in log] == [0, 1, 2]

    straight = tmp_path / "straight"
    train_fold(store, folds, 0, 0, TINY_VARIANT, settings, straight, text_bank_file=bank)
    expected = [json.loads(line) for line in (straight / LOG_NAME).read_text().splitlines()]
    assert [r["total"] for r in log] == [r["total"] for r in expected]
    assert same_weights(load(out / MODEL_NAME)["model"], load(straight / MODEL_NAME)["model"])
