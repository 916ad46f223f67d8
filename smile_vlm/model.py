"""SMILE-VLM (§II-B to §II-G) and the model factory for both papers.

The trainable model is the vision side only: the shared vision encoder f_v, the shared projector
g_v and the fusion head. The text encoder is frozen and lives outside the model; its prompt
embeddings come in as tensors (``prompts.TextBank``), so nothing here can update them.

Interface shared by SMILE-VLM and FACET-VLM (used by the trainer and the evaluator):

* ``encode_views(images (B, V, 3, H, W)) -> z (B, V, D)``: g_v(f_v(x_i)) for every view i.
* ``fuse(z, mask=None) -> (z_fused (B, D), weights (B, V))``.
* ``forward(images, mask=None) -> {"z_views", "z_fused", "weights"}``.
* ``training_losses(batch_views_a, batch_views_b, clean_views, text_emb, class_emb, labels,
  settings, mask=None) -> {"total", <named terms>}``.
* ``class_scores(images, class_emb, mask=None) -> (B, K)`` cosine similarities (zero-shot scores).
* ``preprocess(images01 (B, V, 3, H, W)) -> normalised input`` of the vision encoder.
* ``supervision(prompts_source) -> str``: what reached training from the labels (tables print it).
* ``learns_view_weights``: whether ``fuse``'s weights are learned (else they carry no information).

``mask`` is a (B, V) bool tensor, True where the view exists; every sample needs one view.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smile_vlm.encoders import DEFAULT_VISION_SPEC, load_vision_encoder
from smile_vlm.losses import BARLOW_TWINS_LAMBDA, CLIP_TEMPERATURE, smile_vlm_loss

# Loss settings of SMILE-VLM (Eq. 10). The paper gives none of these numbers: lambda is the Barlow
# Twins reference value, tau CLIP's initial temperature, the weights are ours.
SMILE_LOSS_DEFAULTS = {
    "alpha": 1.0,  # weight of L_mv-bt
    "beta": 1.0,  # weight of L_vl-align
    "gamma": 1.0,  # weight of L_red-min
    "lambd_mv_bt": BARLOW_TWINS_LAMBDA,
    "lambd_red_min": BARLOW_TWINS_LAMBDA,
    "tau": CLIP_TEMPERATURE,
    "mv_bt_reduction": "mean_matrix",  # Eq. 3; "mean_loss" = mean of per-view Barlow Twins losses
    "red_min_target": "identity",  # Eq. 9; "off_diagonal" drops the diagonal term
}

VARIANT_DEFAULTS = {
    "name": "smile_vlm",  # or "facet_vlm"
    "vision": DEFAULT_VISION_SPEC,  # encoder spec, see encoders.py
    "projector": [512],  # hidden sizes of g_v (Linear-BN-ReLU each), then Linear to text_dim
    "fusion_hidden": 128,  # hidden width of the view-scoring MLP of Eq. 5/7
    "loss": {},  # overrides of the loss defaults of the variant
}


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


class ViewAwareFusion(nn.Module):
    """View-aware embedding fusion (Eq. 5 and 7): s_i = MLP(pool(z'_i)), w = softmax(s), z_mv = sum w_i z'_i.

    pool is the identity here: z'_i is already a vector (the projector output), and global average
    pooling of a vector over no spatial axis leaves it unchanged. The same MLP scores every view,
    so the module works for any number of views; absent views get weight 0 through the mask.
    """

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, z: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mask = check_view_mask(mask, z.shape[0], z.shape[1], z.device)
        scores = self.score(z).squeeze(-1)  # Eq. 5/7: s_i
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)  # Eq. 7: w_i
        return (weights.unsqueeze(-1) * z).sum(dim=1), weights  # z_mv = sum_i w_i z'_i


class SmileVLM(nn.Module):
    """SMILE-VLM: shared encoder and projector per view, view-aware fusion, trained with Eq. 10."""

    learns_view_weights = True  # Eq. 7's softmax weights

    def __init__(self, encoder: MultiviewEncoder, n_views: int, fusion_hidden: int = 128, loss_settings: dict | None = None):
        super().__init__()
        self.encoder = encoder
        self.fusion = ViewAwareFusion(encoder.out_dim, fusion_hidden)
        self.n_views = n_views
        self.loss_settings = {**SMILE_LOSS_DEFAULTS, **(loss_settings or {})}

    def preprocess(self, images: Tensor) -> Tensor:
        return self.encoder.preprocess(images)

    def encode_views(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def fuse(self, z: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.fusion(z, mask)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        z_views = self.encode_views(images)
        z_fused, weights = self.fuse(z_views, mask)
        return {"z_views": z_views, "z_fused": z_fused, "weights": weights}

    def class_scores(self, images: Tensor, class_emb: Tensor, mask: Tensor | None = None) -> Tensor:
        """§III-D zero-shot: cosine of the fused embedding with each class's text embedding."""
        z_fused = self.forward(images, mask)["z_fused"]
        return F.normalize(z_fused.float(), dim=-1) @ F.normalize(class_emb.float(), dim=-1).T

    def training_losses(self, batch_views_a: Tensor, batch_views_b: Tensor, clean_views: Tensor | None,
                        text_emb: Tensor, class_emb: Tensor | None, labels: Tensor | None,
                        settings: dict | None = None, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Eq. 10 on one batch.

        ``batch_views_a/b`` are two augmentations of every view (Eq. 1); the alignment terms (Eq. 6,
        8) use ``clean_views`` or, when it is None, augmentation A (one forward pass fewer).
        ``text_emb`` (B, D) holds one prompt embedding per sample (``TextBank.sample``);
        ``class_emb`` and ``labels`` are not used by SMILE-VLM (labels already chose the prompts).
        ``settings`` overrides the loss settings (keys of SMILE_LOSS_DEFAULTS; others ignored);
        ``settings["gather"]``, when given, concatenates a batch-first tensor over DDP ranks so that
        the batch statistics (Eq. 1, 6, 8) are those of the global batch.
        """
        options = self._options(settings)
        gather = (settings or {}).get("gather") or _identity
        z_a = z_b = None
        if options["alpha"]:
            # Running BatchNorm statistics come from the alignment views only (running_stats_frozen).
            with running_stats_frozen(self, frozen=clean_views is not None):
                z_a = self.encode_views(batch_views_a)
            with running_stats_frozen(self):
                z_b = self.encode_views(batch_views_b)
        if clean_views is not None:
            z_views = self.encode_views(clean_views)
        else:
            z_views = z_a if z_a is not None else self.encode_views(batch_views_a)
        z_fused, _ = self.fuse(z_views, mask)
        if z_a is None:
            z_a = z_b = z_views  # unused: alpha == 0 skips L_mv-bt
        else:
            z_a, z_b = gather(z_a), gather(z_b)
        mask = None if mask is None else gather(mask)
        return smile_vlm_loss(z_a, z_b, gather(z_views), gather(z_fused), gather(text_emb), view_mask=mask, **options)

    def supervision(self, prompts_source: str) -> str:
        """Labels reach SMILE-VLM only through the prompts of vl-align (Eq. 6) and red-min (Eq. 8)."""
        options = self.loss_settings
        return describe_supervision(prompts_source, False, bool(options["beta"] or options["gamma"]))

    def _options(self, settings: dict | None) -> dict:
        settings = settings or {}
        return {key: settings.get(key, default) for key, default in self.loss_settings.items()}


def _identity(tensor: Tensor) -> Tensor:
    return tensor


def build_model(variant: dict, n_views: int, text_dim: int) -> nn.Module:
    """SMILE-VLM or FACET-VLM from a variant dict (keys: VARIANT_DEFAULTS, and facet.FACET_DEFAULTS)."""
    variant = {**VARIANT_DEFAULTS, **(variant or {})}
    if n_views < 1:
        raise ValueError(f"n_views must be at least 1, got {n_views}")
    encoder = MultiviewEncoder(load_vision_encoder(variant["vision"]), variant["projector"], text_dim)
    name = variant["name"].lower().replace("-", "_")
    if name == "smile_vlm":
        return SmileVLM(encoder, n_views, int(variant["fusion_hidden"]), variant.get("loss"))
    if name == "facet_vlm":
        from smile_vlm.facet import FacetVLM

        return FacetVLM(encoder, n_views, {**variant.get("facet", {}), **variant.get("loss", {})})
    raise ValueError(f"variant name must be 'smile_vlm' or 'facet_vlm', got {variant['name']!r}")
