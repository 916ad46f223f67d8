"""Pieces both models share: the per-view encoder and projector, view masks, BatchNorm handling,
and the words a table uses for the supervision a model trained with.

Interface shared by SMILE-VLM (smile.py) and FACET-VLM (facet.py), used by training and evaluation:

* ``encode_views(images (B, V, 3, H, W)) -> z (B, V, D)``: g_v(f_v(x_i)) for every view i.
* ``fuse(z, mask=None) -> (z_fused (B, D), weights (B, V))``.
* ``forward(images, mask=None) -> {"z_views", "z_fused", "weights"}``.
* ``training_losses(batch_views_a, batch_views_b, clean_views, text_emb, class_emb, labels,
  mask=None) -> {"total", <named terms>}`` (SMILE-VLM's ``embeddings=True`` adds ``z_views``, ``z_fused``).
* ``class_scores(images, class_emb, mask=None) -> (B, K)`` cosine similarities (zero-shot scores).
* ``preprocess(images01 (B, V, 3, H, W)) -> normalised input`` of the vision encoder.
* ``supervision(prompts_source) -> str``: what reached training from the labels (tables print it).
* ``learns_view_weights``: whether ``fuse``'s weights are learned (else they carry no information).

``mask`` is a (B, V) bool tensor, True where the view exists; every sample needs one view.
The text encoder is frozen and lives outside the models; prompt embeddings come in as tensors
(``prompts.TextBank``), so nothing here can update them.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


def describe_supervision(prompts_source: str, cross_entropy: bool, prompts: bool) -> str:
    """The supervision a row of a table was trained with, in words.

    ``prompts``: a loss compares images with per-sample prompts (vl-align, red-min), whose class
    is the label (``prompts.source: label``) or the model's own zero-shot pseudo-label
    (``pseudo``). ``cross_entropy``: a classification loss on those same classes.
    """
    pseudo = prompts_source == "pseudo"
    parts = []
    if cross_entropy:
        parts.append("cross-entropy on pseudo-labels" if pseudo else "cross-entropy on labels")
    if prompts:
        parts.append("pseudo-label prompts" if pseudo else "class prompts")
    if not parts:
        return "none (label-free)"
    return " + ".join(parts) + (" (label-free)" if pseudo else " (labels)")


def check_view_mask(mask: Tensor | None, batch: int, n_views: int, device) -> Tensor:
    """A (B, V) bool mask (all True when None); every sample must keep at least one view."""
    if mask is None:
        return torch.ones(batch, n_views, dtype=torch.bool, device=device)
    mask = mask.to(device=device, dtype=torch.bool)
    if mask.shape != (batch, n_views):
        raise ValueError(f"view mask must be ({batch}, {n_views}), got {tuple(mask.shape)}")
    if not mask.any(dim=1).all():
        raise ValueError("every sample needs at least one view present in the view mask")
    return mask


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module, frozen: bool = True):
    """Inside, BatchNorm layers still normalise with the batch statistics (training mode) but do
    not update their running mean and variance.

    Why: evaluation normalises with the running statistics, and it sees clean views (resized and
    normalised, no augmentation). So only the forward pass on the views the alignment terms use
    (the clean views, or augmentation A when ``train.align_on`` is "augmented") updates them; the
    extra augmented passes of mv-bt (Eq. 1) would otherwise pull them toward the statistics of
    cropped, colour-jittered images that evaluation never sees, and would advance them two or
    three times per step.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [layer.track_running_stats for layer in layers]
    for layer in layers:
        layer.track_running_stats = False  # BatchNorm then passes no running buffers to F.batch_norm
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.track_running_stats = value


def masked_mean(tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the present views: ((B, D), weights (B, V))."""
    weights = mask.to(tokens.dtype) / mask.sum(dim=1, keepdim=True).to(tokens.dtype)
    return (weights.unsqueeze(-1) * tokens).sum(dim=1), weights


class Projector(nn.Sequential):
    """g_v: Linear-BN-ReLU hidden layers, then a Linear into the text space (Barlow Twins projector).

    The last layer maps to the text encoder's dimension so that vision and text embeddings live in
    one space, as Eq. 6 and Eq. 8 compare them directly.
    """

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        layers, width = [], in_dim
        for size in hidden:
            layers += [nn.Linear(width, size, bias=False), nn.BatchNorm1d(size), nn.ReLU(inplace=True)]
            width = size
        layers.append(nn.Linear(width, out_dim, bias=False))
        super().__init__(*layers)


class MultiviewEncoder(nn.Module):
    """Shared f_v and g_v applied to every view (§II-B: one encoder and projector for all views)."""

    def __init__(self, vision_encoder: nn.Module, projector_hidden: list[int], out_dim: int):
        super().__init__()
        self.vision_encoder = vision_encoder
        self.projector = Projector(vision_encoder.out_dim, list(projector_hidden), out_dim)
        self.out_dim = out_dim

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 5:
            raise ValueError(f"images must be (B, V, 3, H, W), got {tuple(images.shape)}")
        batch, n_views = images.shape[:2]
        flat = images.reshape(batch * n_views, *images.shape[2:])
        return self.projector(self.vision_encoder(flat)).view(batch, n_views, -1)

    def preprocess(self, images: Tensor) -> Tensor:
        batch, n_views = images.shape[:2]
        flat = self.vision_encoder.preprocess(images.reshape(batch * n_views, *images.shape[2:]))
        return flat.view(batch, n_views, *flat.shape[1:])
