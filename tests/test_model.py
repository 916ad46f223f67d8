"""SMILE-VLM model: shared encoder/projector, view-aware fusion (Eq. 5/7), the trainer interface."""

import pytest
import torch
import torch.nn.functional as F

from smile_vlm.losses import smile_vlm_loss
from smile_vlm.models import build_model
from smile_vlm.models.common import Projector
from smile_vlm.models.smile import SmileVLM, ViewAwareFusion
from smile_vlm.settings import VARIANT_DEFAULTS

TINY = {"model": "smile_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16},
        "projector": [24], "fusion_hidden": 8}
TEXT_DIM = 12


def _images(batch, n_views, seed=0):
    return torch.rand(batch, n_views, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_projector_maps_into_the_text_space():
    projector = Projector(32, [64, 48], 12)
    kinds = [type(layer).__name__ for layer in projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert projector(torch.randn(5, 32)).shape == (5, 12)


def test_fusion_weights_sum_to_one_and_respect_the_mask():
    fusion = ViewAwareFusion(6, hidden=4)
    z = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True, True, True, True], [True, False, True, False], [False, False, False, True]])
    fused, weights = fusion(z, mask)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    torch.testing.assert_close(weights[2], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(fused[2], z[2, 3])
    torch.testing.assert_close(fused, (weights.unsqueeze(-1) * z).sum(dim=1))


def test_fusion_with_equal_scores_is_the_mean_of_present_views():
    fusion = ViewAwareFusion(6, hidden=4)
    torch.nn.init.zeros_(fusion.score[-1].weight)  # every view scores the same constant
    z = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[True, True, True], [True, False, True]])
    fused, weights = fusion(z, mask)
    torch.testing.assert_close(weights, torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, 0.5]]))
    torch.testing.assert_close(fused[1], (z[1, 0] + z[1, 2]) / 2)


def test_a_sample_without_views_is_refused():
    fusion = ViewAwareFusion(6)
    with pytest.raises(ValueError, match="at least one view"):
        fusion(torch.randn(2, 2, 6), torch.tensor([[True, False], [False, False]]))


@pytest.mark.parametrize("n_views", [1, 2, 3, 4, 5])
def test_shapes_for_any_number_of_views(n_views):
    model = build_model(TINY, n_views, TEXT_DIM)
    assert isinstance(model, SmileVLM)
    out = model(_images(4, n_views))
    assert out["z_views"].shape == (4, n_views, TEXT_DIM)
    assert out["z_fused"].shape == (4, TEXT_DIM) and out["weights"].shape == (4, n_views)
    torch.testing.assert_close(out["weights"].sum(dim=1), torch.ones(4))
    assert model.class_scores(_images(4, n_views), torch.randn(7, TEXT_DIM)).shape == (4, 7)


def test_masked_view_content_does_not_change_the_fused_embedding():
    model = build_model(TINY, 3, TEXT_DIM).eval()  # eval: BN uses running stats, no batch coupling
    images = _images(2, 3)
    other = images.clone()
    other[1, 2] = torch.rand(3, 16, 16)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    torch.testing.assert_close(model(images, mask)["z_fused"], model(other, mask)["z_fused"])


def test_class_scores_are_cosines_of_the_fused_embedding():
    model = build_model(TINY, 3, TEXT_DIM).eval()
    images, classes = _images(3, 3), torch.randn(5, TEXT_DIM)
    fused = model(images)["z_fused"]
    expected = F.cosine_similarity(fused.unsqueeze(1), classes.unsqueeze(0), dim=-1)
    torch.testing.assert_close(model.class_scores(images, classes), expected)


def test_training_losses_are_eq_10_on_the_model_embeddings():
    torch.manual_seed(0)
    # eval so repeated forwards give identical embeddings
    model = build_model({**TINY, "loss": {"alpha": 1.0, "gamma": 0.5}}, 3, TEXT_DIM).eval()
    views_a, views_b, clean = _images(6, 3, 1), _images(6, 3, 2), _images(6, 3, 3)
    text = torch.randn(6, TEXT_DIM)
    terms = model.training_losses(views_a, views_b, clean, text, None, None)
    with torch.no_grad():
        z_views = model.encode_views(clean)
        expected = smile_vlm_loss(model.encode_views(views_a), model.encode_views(views_b), z_views,
                                  model.fuse(z_views)[0], text, **{**model.loss_settings, "alpha": 1.0, "gamma": 0.5})
    for name in ("mv_bt", "vl_align", "red_min", "total"):
        torch.testing.assert_close(terms[name], expected[name])


def test_variant_loss_settings_override_the_schema_defaults():
    model = build_model({**TINY, "loss": {"beta": 0.0, "red_min_target": "off_diagonal"}}, 2, TEXT_DIM)
    assert model.loss_settings["alpha"] == VARIANT_DEFAULTS["loss"]["alpha"]  # untouched keys keep the default
    images, text = _images(4, 2), torch.randn(4, TEXT_DIM)
    assert model.training_losses(images, images, None, text, None, None)["vl_align"].item() == 0.0
    default = build_model(TINY, 2, TEXT_DIM)
    assert default.training_losses(images, images, None, text, None, None)["vl_align"].item() > 0


def test_gradients_reach_encoder_projector_and_fusion():
    model = build_model(TINY, 3, TEXT_DIM)
    terms = model.training_losses(_images(6, 3, 1), _images(6, 3, 2), _images(6, 3, 3),
                                  torch.randn(6, TEXT_DIM), None, None)
    terms["total"].backward()
    for part in (model.encoder.vision_encoder, model.encoder.projector, model.fusion):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant model"):
        build_model({**TINY, "model": "resnet_classifier"}, 3, TEXT_DIM)
