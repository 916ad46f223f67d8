"""The pretraining's action-unit term: phrases, targets from the corpus, the sigmoid loss, the corpus cache
(its learning: tests/test_pretrain.py)."""

import json
import math

import pytest
import torch

from smile_vlm import au_align, corpus, pretrain
from smile_vlm.losses import au_align_loss
from smile_vlm.synth.captions import caption
from smile_vlm.synth.expressions import ACTION_UNITS

TINY = {"identities": 1, "samples_per_identity": 2, "render_size": 32, "frames": 3, "ict_dir": None}


def test_au_align_loss_by_hand():
    # B = 1, V = 1, D = 2, K = 2: the view is phrase 0 exactly, the fused embedding is orthogonal to both.
    z_views, z_fused = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[0.0, 3.0]])
    z_units = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    target, known = torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool)
    scale, bias = torch.tensor(2.0), torch.tensor(-0.5)

    def softplus(x):
        return math.log1p(math.exp(x))

    # -log sigmoid(y x) = softplus(-y x); view: cos (1, -1) -> x = 1.5 (y +1), -2.5 (y -1); fused: cos 0 -> x = -0.5
    expected = (softplus(-1.5) + softplus(-2.5) + softplus(0.5) + softplus(-0.5)) / 4
    value = au_align_loss(z_views, z_fused, z_units, target, known, scale, bias)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # a pair left out (known False) and an absent view drop their terms
    known = torch.tensor([[True, False]])
    left_out = au_align_loss(z_views, z_fused, z_units, target, known, scale, bias)
    assert left_out.item() == pytest.approx((softplus(-1.5) + softplus(0.5)) / 2, rel=1e-6)
    no_view = au_align_loss(z_views, z_fused, z_units, target, known, scale, bias, view_mask=torch.tensor([[False]]))
    assert no_view.item() == pytest.approx(softplus(0.5), rel=1e-6)


def test_au_align_loss_is_lower_when_embeddings_match_their_phrases():
    generator = torch.Generator().manual_seed(0)
    z_units = torch.randn(5, 8, generator=generator)
    target = (torch.rand(6, 5, generator=generator) < 0.4).float()
    known = torch.ones(6, 5, dtype=torch.bool)
    matched = target @ z_units - (1 - target) @ z_units / 2  # towards the shown phrases, away from the rest
    z_views = torch.stack([matched, matched], dim=1)
    scale, bias = torch.tensor(10.0), torch.tensor(0.0)
    good = au_align_loss(z_views, matched, z_units, target, known, scale, bias)
    wrong = au_align_loss(z_views, matched, z_units, 1 - target, known, scale, bias)
    assert good < 0.5 * wrong


def test_targets_name_each_shown_unit_and_leave_out_the_other_sides_form():
    samples = [au_align.sample_units(json.dumps(units)) for units in (
        {"12": 0.8, "6": 0.05},  # AU6 below the visible level
        {"L12": 0.5},  # one-sided
        {"L4": 0.4, "R4": 0.3},  # both sides: the bilateral AU4
        {})]
    keys = au_align.phrase_keys(samples)
    assert keys == [*ACTION_UNITS, "L12", au_align.NEUTRAL]
    target, known = au_align.targets(samples, keys)
    k12, k6, k4, kl12, kn = (keys.index(key) for key in (12, 6, 4, "L12", au_align.NEUTRAL))
    assert target[0, k12] == 1 and target[0, k6] == 0 and not known[0, kl12]
    assert target[1, kl12] == 1 and not known[1, k12] and target[1].sum() == 1
    assert target[2, k4] == 1 and target[2].sum() == 1
    assert target[3, kn] == 1 and target[3].sum() == 1 and target[:3, kn].sum() == 0
    assert known.sum() == 4 * len(keys) - 2
    assert au_align.phrase_texts(43)[-1] == caption({43: 1.0})


def test_old_corpus_without_units_is_rebuilt(tmp_path):
    import numpy as np

    settings = pretrain.resolve({"pretrain": TINY})
    path = tmp_path / "corpus.npz"
    built = corpus.load_or_build_corpus(settings, path)
    assert corpus.cached_corpus(settings, path)["captions"] == built["captions"]
    other = pretrain.resolve({"pretrain": {**TINY, "seed": 5}})
    assert corpus.cached_corpus(other, path) is None  # another corpus's settings: not this cache
    with np.load(path) as data:
        fields = {key: data[key] for key in data.files if key != "units"}
    np.savez(path, **fields)  # a cache written before the corpus kept the apex weights
    assert corpus.cached_corpus(settings, path) is None
    again = corpus.load_or_build_corpus(settings, path)
    assert again["units"] == built["units"]
    with np.load(path) as data:
        assert "units" in data.files
