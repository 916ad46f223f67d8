"""Replay of the pretraining's captioned corpus during fine-tuning (smile_vlm.replay)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from smile_vlm import pretrain, replay
from smile_vlm.augment import Augmenter
from smile_vlm.errors import ScanError
from smile_vlm.losses import vl_align_loss
from smile_vlm.models import image_input, load_trained
from smile_vlm.report import init_text
from smile_vlm.train import train_fold
from test_train import CLASSES, TINY_VARIANT, load, make_fold_inputs, text_encoder, tiny_settings  # noqa: F401

VISION = {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16}
PRETRAIN = {"identities": 4, "samples_per_identity": 3, "render_size": 32, "frames": 3, "epochs": 1,
            "batch_size": 6, "lr": 3e-3, "ict_dir": None}


@pytest.fixture
def pretrained(tmp_path, text_encoder):
    """A tiny pretraining (its corpus.npz beside its vision.pt) and a tiny store with folds."""
    vision_pt = tmp_path / "pretrain" / "vision.pt"
    vision_pt.parent.mkdir()
    pretrain.pretrain({"pretrain": PRETRAIN, "encoders": {"vision": dict(VISION)}}, vision_pt, threads=1)
    store, folds = make_fold_inputs(tmp_path)
    return vision_pt, store, folds


def fine_tune(pretrained, out, lr=3e-3, **variant):
    vision_pt, store, folds = pretrained
    settings = tiny_settings(epochs=3, lr=lr)
    variant = {**TINY_VARIANT, "vision": {"init": str(vision_pt)}, **variant}
    return train_fold(store, folds, 0, 0, variant, settings, out), variant


def caption_loss(model_path, variant, text_encoder) -> float:
    """Eq. 6 of every replayed sample against its caption (no class negatives), batch statistics."""
    model, _ = load_trained(model_path)
    kept = replay.load_replay({**variant, "replay": 1.0}, None, model.n_views, 0)
    size, mean, std = image_input(model)
    clean = Augmenter(size, {}, mean, std).clean(kept.images)
    with torch.no_grad():
        out = model.train()(clean)
        return float(vl_align_loss(out["z_views"], out["z_fused"], kept.captions, kept.tau))


def test_replay_keeps_the_pretraining_captions_and_zero_trains_as_before(pretrained, tmp_path, text_encoder):
    plain, variant = fine_tune(pretrained, tmp_path / "plain")
    replayed, _ = fine_tune(pretrained, tmp_path / "replayed", replay=3.0)
    # replay 0 is the plain fine-tuning, bit for bit (the corpus is not even read)
    zero, _ = fine_tune(pretrained, tmp_path / "zero", replay=0.0, replay_samples=2)
    for name, tensor in load(plain)["model"].items():
        assert torch.equal(tensor, load(zero)["model"][name]), name

    assert caption_loss(replayed, variant, text_encoder) < caption_loss(plain, variant, text_encoder) - 0.05
    log = [line for line in (tmp_path / "replayed" / "train_log.jsonl").read_text().splitlines() if '"epoch"' in line]
    assert all('"replay_vl_align"' in line and '"replay_au_align"' in line for line in log)


def test_replay_with_lr_zero_changes_nothing(pretrained, tmp_path, text_encoder):
    plain, variant = fine_tune(pretrained, tmp_path / "plain", lr=0.0)
    replayed, _ = fine_tune(pretrained, tmp_path / "replayed", lr=0.0, replay=3.0)
    assert caption_loss(replayed, variant, text_encoder) == pytest.approx(caption_loss(plain, variant, text_encoder))


def test_replay_draws_a_seeded_subset_and_marks_the_captions_without_emotion(pretrained):
    vision_pt, _, _ = pretrained
    variant = {"model": "smile_vlm", "vision": {"init": str(vision_pt)}, "replay": 1.0, "replay_samples": 5}
    first, again = (replay.load_replay(variant, None, 3, 0) for _ in range(2))
    assert first.images.shape[:2] == (5, 3) and first.captions.shape[0] == 5
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, replay.load_replay(variant, None, 3, 1).images)
    assert first.free is not None and first.phrases is not None and first.targets.shape[0] == 5
    assert replay.load_replay({**variant, "replay_class_negatives": False}, None, 3, 0).free is None
    assert replay.load_replay({**variant, "replay": 0.0}, None, 3, 0) is None


def test_replay_without_its_corpus_or_pretraining_is_refused_naming_what_to_change(pretrained, tmp_path):
    vision_pt, _, _ = pretrained
    with pytest.raises(ValueError, match="vision.init"):
        replay.load_replay({"model": "smile_vlm", "replay": 1.0}, None, 3, 0)
    with pytest.raises(ValueError, match="model: smile_vlm"):
        replay.load_replay({"model": "facet_vlm", "vision": {"init": str(vision_pt)}, "replay": 1.0}, None, 3, 0)
    variant = {"model": "smile_vlm", "vision": {"init": str(vision_pt)}, "replay": 1.0}
    with pytest.raises(ScanError, match="views"):
        replay.load_replay(variant, None, 2, 0)
    replay.corpus_path(vision_pt).unlink()
    with pytest.raises(ScanError) as err:
        replay.load_replay(variant, None, 3, 0)
    assert str(replay.corpus_path(vision_pt)) in str(err.value) and "replay: 0" in str(err.value)


def test_class_negatives_enter_the_softmax_only_where_the_mask_allows():
    generator = torch.Generator().manual_seed(0)
    z_views, z_fused, z_text = (torch.randn(*shape, generator=generator) for shape in ((4, 3, 8), (4, 8), (4, 8)))
    classes = torch.randn(2, 8, generator=generator)
    plain = vl_align_loss(z_views, z_fused, z_text, 0.1)
    none = torch.zeros(4, 2, dtype=torch.bool)
    assert torch.equal(vl_align_loss(z_views, z_fused, z_text, 0.1, negatives=classes, negative_mask=none), plain)

    def by_hand(queries):
        logits = F.normalize(queries, dim=-1) @ F.normalize(torch.cat([z_text, classes]), dim=-1).T / 0.1
        return F.cross_entropy(logits, torch.arange(4), reduction="none")

    expected = torch.cat([by_hand(z_views[:, i]) for i in range(3)] + [by_hand(z_fused)]).mean()
    torch.testing.assert_close(vl_align_loss(z_views, z_fused, z_text, 0.1, negatives=classes), expected)
    assert vl_align_loss(z_views, z_fused, z_text, 0.1, negatives=classes) > plain


def test_every_table_row_says_whether_it_replayed():
    assert init_text({"init": "results/pretrain/default/vision.pt", "replay": 3.0}) == \
        "results/pretrain/default/vision.pt, replay 3"
    assert init_text({"init": "results/pretrain/default/vision.pt", "replay": 0.0}) == "results/pretrain/default/vision.pt"
    assert init_text({}) == "random"
