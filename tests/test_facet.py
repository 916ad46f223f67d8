"""FACET-VLM (interpretation of the abstract): CVSA, MTGF, consistency loss, ablation switches."""

import pytest
import torch
import torch.nn.functional as F

from smile_vlm.models import build_model
from smile_vlm.models.facet import FacetVLM

TEXT_DIM, K = 12, 6


def _variant(**facet):
    return {"model": "facet_vlm", "vision": {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16},
            "projector": [24], "facet": {"heads": 2, **facet}}


def _images(batch, n_views, seed=0):
    return torch.rand(batch, n_views, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _class_emb(seed=5):
    return F.normalize(torch.randn(K, TEXT_DIM, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("n_views", [1, 2, 3, 4, 5])
def test_shapes_for_any_number_of_views(n_views):
    model = build_model(_variant(), n_views, TEXT_DIM).eval()
    assert isinstance(model, FacetVLM)
    out = model(_images(3, n_views), class_emb=_class_emb())
    assert out["z_views"].shape == (3, n_views, TEXT_DIM) and out["z_fused"].shape == (3, TEXT_DIM)
    assert out["scores"].shape == (3, K) and out["scores"].abs().max() <= 1 + 1e-5
    assert out["view_attention"].shape == (3, K, n_views)
    torch.testing.assert_close(out["view_attention"].sum(dim=-1), torch.ones(3, K))


def test_masked_views_have_no_influence():
    model = build_model(_variant(), 4, TEXT_DIM).eval()
    images, classes = _images(2, 4), _class_emb()
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    altered = images.clone()
    altered[0, 1] = torch.rand(3, 16, 16)
    altered[1, [0, 1, 3]] = torch.rand(3, 3, 16, 16)
    out, out_altered = model(images, mask, classes), model(altered, mask, classes)
    torch.testing.assert_close(out["scores"], out_altered["scores"])
    torch.testing.assert_close(out["z_fused"], out_altered["z_fused"])
    assert (out["view_attention"][~mask.unsqueeze(1).expand(-1, K, -1)] == 0).all()
    torch.testing.assert_close(out["weights"], torch.tensor([[1 / 3, 0, 1 / 3, 1 / 3], [0, 0, 1.0, 0]]))


def test_ablations_switch_components_off():
    no_cvsa = build_model(_variant(cvsa=False), 3, TEXT_DIM).eval()
    assert no_cvsa.cvsa is None
    z = no_cvsa.encode_views(_images(2, 3))
    torch.testing.assert_close(no_cvsa.fuse(z)[0], z.mean(dim=1))  # uniform fusion
    plain = build_model(_variant(cvsa=False, mtgf=False), 3, TEXT_DIM).eval()
    assert plain.mtgf is None
    images, classes = _images(2, 3), _class_emb()
    pooled = plain(images)["z_fused"]
    expected = F.cosine_similarity(pooled.unsqueeze(1), classes.unsqueeze(0), dim=-1)
    torch.testing.assert_close(plain.class_scores(images, classes), expected)


def test_consistency_term_is_zero_for_identical_views_and_positive_otherwise():
    model = build_model(_variant(ce_weight=0.0, vl_align_weight=0.0), 3, TEXT_DIM)
    classes, labels, text = _class_emb(), torch.arange(4) % K, torch.randn(4, TEXT_DIM)
    same = _images(4, 1).expand(4, 3, 3, 16, 16)
    terms = model.training_losses(same, same, same, text, classes, labels)
    assert terms["consistency"].abs().item() < 1e-6
    assert terms["total"].abs().item() < 1e-6  # the other terms are switched off
    different = _images(4, 3)
    assert model.training_losses(different, different, different, text, classes, labels)["consistency"] > 0
    cosine_model = build_model(_variant(ce_weight=0.0, vl_align_weight=0.0, consistency="cosine"), 3, TEXT_DIM)
    cosine = cosine_model.training_losses(different, different, different, text, classes, labels)
    assert cosine["consistency"] > 0


def test_consistency_weight_zero_disables_the_term():
    model = build_model(_variant(consistency_weight=0.0), 2, TEXT_DIM)
    images = _images(4, 2)
    terms = model.training_losses(images, images, images, torch.randn(4, TEXT_DIM), _class_emb(), torch.arange(4))
    assert terms["consistency"].item() == 0.0
    torch.testing.assert_close(terms["total"], terms["ce"] + terms["vl_align"])


def test_gradients_reach_every_trainable_part_and_text_stays_frozen():
    model = build_model(_variant(mv_bt_weight=0.5), 3, TEXT_DIM)
    classes = _class_emb()
    text = F.normalize(torch.randn(6, TEXT_DIM), dim=-1)
    classes_before, text_before = classes.clone(), text.clone()
    terms = model.training_losses(_images(6, 3, 1), _images(6, 3, 2), _images(6, 3, 3), text, classes,
                                  torch.arange(6) % K)
    assert set(terms) == {"ce", "mtgf_align", "vl_align", "consistency", "mv_bt", "total"} and terms["mv_bt"] > 0
    terms["total"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    for part in (model.encoder.vision_encoder, model.encoder.projector, model.cvsa, model.mtgf):
        assert sum(p.grad.abs().sum() for p in part.parameters()) > 0
    assert classes.grad is None and text.grad is None
    torch.testing.assert_close(classes, classes_before)
    torch.testing.assert_close(text, text_before)


def test_heads_must_divide_the_embedding_size():
    with pytest.raises(ValueError, match="divisible"):
        build_model(_variant(heads=5), 3, TEXT_DIM)
