"""One place that turns a variant (architecture as data) into a model, and a model.pt back into one.

Evaluation, prediction and the deployable model read trained weights through ``load_trained``; none
of them imports the trainer.
"""

from __future__ import annotations

import torch
from torch import nn

from smile_vlm.models.common import MultiviewEncoder
from smile_vlm.models.encoders import load_vision_encoder
from smile_vlm.models.facet import FacetVLM
from smile_vlm.models.smile import SmileVLM
from smile_vlm.settings import VARIANT_DEFAULTS, variant_vision
from smile_vlm.wise import mix_state

ARCHITECTURES = ("smile_vlm", "facet_vlm")


def model_variant(variant: dict, settings: dict) -> dict:
    """The variant build_model takes: the workflow's variant with the ``encoders.vision`` section
    (the vision encoder spec) merged under the variant's own ``vision`` overrides
    (``settings.variant_vision``, which the workflow's input functions call too)."""
    variant = dict(variant or {})
    if settings["encoders"].get("vision"):
        variant["vision"] = variant_vision(variant, settings["encoders"])
    return variant


def build_model(variant: dict, n_views: int, text_dim: int) -> nn.Module:
    """SMILE-VLM or FACET-VLM from a variant dict (keys: settings.VARIANT_DEFAULTS)."""
    variant = {**VARIANT_DEFAULTS, **(variant or {})}
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    encoder = MultiviewEncoder(load_vision_encoder(variant["vision"]), variant["projector"], text_dim)
    name = variant["model"].lower().replace("-", "_")
    if name == "smile_vlm":
        return SmileVLM(encoder, n_views, int(variant["fusion_hidden"]), variant.get("loss"))
    if name == "facet_vlm":
        return FacetVLM(encoder, n_views, {**variant.get("facet", {}), **variant.get("loss", {})})
    raise ValueError(f"variant model must be one of {ARCHITECTURES}, got {variant['model']!r}")


def image_input(model: nn.Module) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) the model's vision encoder expects (encoders.ImageInput)."""
    for module in model.modules():
        if all(hasattr(module, name) for name in ("image_size", "mean", "std")):
            return int(module.image_size), tuple(module.mean), tuple(module.std)
    raise ValueError("the model has no vision encoder exposing image_size, mean and std")


def load_trained(model_path, device: str | torch.device = "cpu", wise_alpha: float | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model written by train.train_fold (model.pt) and return it with the saved metadata.
    Its weights are mixed with its pretraining at ``wise_alpha`` (None: the variant's; smile_vlm.wise)."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    variant = dict(state["variant"])
    if (variant.get("vision") or {}).get("init"):
        # The saved weights replace the pretrained start, so the vision.pt need not exist here.
        variant["vision"] = {k: v for k, v in variant["vision"].items() if k != "init"}
    model = build_model(variant, int(state["n_views"]), int(state["text_dim"]))
    model.load_state_dict(mix_state(state, wise_alpha))
    return model.to(device).eval(), state
