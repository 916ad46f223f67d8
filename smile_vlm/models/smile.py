"""SMILE-VLM (§II-B to §II-G): shared encoder and projector per view, view-aware fusion, Eq. 10.

The trainable model is the vision side only: the shared vision encoder f_v, the shared projector
g_v and the fusion head (interface: common.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smile_vlm.losses import smile_vlm_loss
from smile_vlm.models.common import MultiviewEncoder, check_view_mask, describe_supervision, running_stats_frozen
from smile_vlm.settings import VARIANT_DEFAULTS

# Loss settings of SMILE-VLM (Eq. 10); defaults and their reasons: the schema's $defs/variant_defaults.
SMILE_LOSS_DEFAULTS = VARIANT_DEFAULTS["loss"]

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

    def __init__(self, encoder: MultiviewEncoder, n_views: int, fusion_hidden: int, loss_settings: dict | None = None):
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
                        mask: Tensor | None = None, embeddings: bool = False) -> dict[str, Tensor]:
        """Eq. 10 on one batch.

        ``batch_views_a/b`` are two augmentations of every view (Eq. 1); the alignment terms (Eq. 6,
        8) use ``clean_views`` or, when it is None, augmentation A (one forward pass fewer).
        ``text_emb`` (B, D) holds one prompt embedding per sample (``TextBank.sample``);
        ``class_emb`` and ``labels`` are not used by SMILE-VLM (labels already chose the prompts).
        Under DDP the trainer makes ``encode_views`` return the global batch (train.global_batch).
        ``embeddings``: also return the ``z_views`` and ``z_fused`` the alignment used (the
        pretraining's action-unit term reuses them).
        """
        options = self.loss_settings
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
        terms = smile_vlm_loss(z_a, z_b, z_views, z_fused, text_emb, view_mask=mask, **options)
        return {**terms, "z_views": z_views, "z_fused": z_fused} if embeddings else terms

    def supervision(self, prompts_source: str) -> str:
        """Labels reach SMILE-VLM only through the prompts of vl-align (Eq. 6) and red-min (Eq. 8)."""
        options = self.loss_settings
        return describe_supervision(prompts_source, False, bool(options["beta"] or options["gamma"]))
