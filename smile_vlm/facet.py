"""FACET-VLM: CVSA, MTGF and the multiview consistency loss, as INTERPRETATIONS of the abstract.

Only the abstract of FACET-VLM (Neurocomputing 657, 131621, 2025) could be read. It names three
components (Cross-View Semantic Aggregation "for view-consistent fusion", Multiview Text-Guided
Fusion "for semantically aligned facial emotions", a multiview consistency loss "to enforce
structural coherence across views") and gives no equation. Every design below is ours, chosen to
match those words; alternatives we considered are listed in each docstring.

The model shares SMILE-VLM's vision side (one encoder f_v and projector g_v for all views) and its
interface (see model.py). The text encoder is frozen and outside the model: class prompt
embeddings (K, D) arrive as inputs. The attention layers' query/key/value projections are the
only trainable maps applied to the text embeddings (inside MTGF); they are part of the model.

Variant keys (``variant["facet"]``, or ``variant["loss"]`` for the loss ones), defaults in
FACET_DEFAULTS: ``cvsa`` and ``mtgf`` (bool ablation switches), ``heads``,
``consistency_weight`` (0 disables), ``consistency`` ("sym_kl" | "cosine"), ``ce_weight``,
``vl_align_weight``, ``mv_bt_weight``, ``lambd_mv_bt``, ``tau``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smile_vlm.losses import (BARLOW_TWINS_LAMBDA, CLIP_TEMPERATURE, multiview_consistency_loss, mv_bt_loss,
                              prompt_classification_loss, vl_align_loss)
from smile_vlm.model import MultiviewEncoder, check_view_mask, masked_mean

FACET_DEFAULTS = {
    "cvsa": True,  # cross-view self-attention before pooling; False: plain mean over views
    "mtgf": True,  # text-queried cross-attention fusion; False: cos(pooled embedding, t_k)
    "heads": 4,  # attention heads of CVSA and MTGF (the embedding size must be divisible by it)
    "consistency": "sym_kl",  # "sym_kl" between per-view class posteriors, or "cosine" between views
    "consistency_weight": 1.0,  # 0 disables the consistency loss
    "ce_weight": 1.0,  # cross-entropy over the MTGF prompt similarities
    "vl_align_weight": 1.0,  # Eq. 6 of SMILE-VLM on the views and the pooled embedding (0 disables)
    "mv_bt_weight": 0.0,  # optional SMILE-VLM Eq. 1-4 on the two augmentations (0: not computed)
    "lambd_mv_bt": BARLOW_TWINS_LAMBDA,
    "tau": CLIP_TEMPERATURE,
}
_LOSS_KEYS = ("consistency", "consistency_weight", "ce_weight", "vl_align_weight", "mv_bt_weight", "lambd_mv_bt", "tau")


class CrossViewSemanticAggregation(nn.Module):
    """CVSA (interpretation): self-attention over the V view tokens, then masked mean pooling.

    tokens = LayerNorm(x + MHA(x, x, x)), x_i = z'_i + e_i with a learned embedding e_i per view
    position (views are synchronised cameras, so "which view" is information); absent views are
    excluded as keys (key padding mask) and from the pooling.
    Alternatives considered: SMILE-VLM's scalar softmax weights (Eq. 7) on the refined tokens; a
    learned [CLS] query token instead of mean pooling; a full transformer block with an MLP.
    """

    def __init__(self, dim: int, n_views: int, heads: int):
        super().__init__()
        self.view_embeddings = nn.Parameter(torch.randn(n_views, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(tokens (B, V, D), pooled (B, D), pooling weights (B, V))."""
        if z.shape[1] > self.view_embeddings.shape[0]:
            raise ValueError(f"model built for {self.view_embeddings.shape[0]} views, got {z.shape[1]}")
        x = z + self.view_embeddings[: z.shape[1]]
        attended, _ = self.attention(x, x, x, key_padding_mask=~mask, need_weights=False)
        tokens = self.norm(x + attended)
        pooled, weights = masked_mean(tokens, mask)
        return tokens, pooled, weights


class MultiviewTextGuidedFusion(nn.Module):
    """MTGF (interpretation): class prompt embeddings query the view tokens (cross-attention).

    For each class k, fused_k = MHA(query = t_k, keys/values = view tokens): a text-conditioned
    weighting of the views, so each class looks at the views that show its cues. Class score
    s_k = cos(fused_k, t_k). Absent views are masked out of the keys.
    Alternatives considered: text-conditioned gating (sigmoid(W t_k) * pooled); FiLM of the view
    tokens by the text; adding the pooled CVSA embedding as a residual to fused_k.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: Tensor, class_emb: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(scores (B, K), fused per class (B, K, D), attention over views (B, K, V))."""
        queries = class_emb.to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        fused, view_attention = self.attention(queries, tokens, tokens, key_padding_mask=~mask)
        scores = F.cosine_similarity(fused.float(), queries.float(), dim=-1)
        return scores, fused, view_attention


class FacetVLM(nn.Module):
    """FACET-VLM (interpretation): shared encoder, CVSA, MTGF, consistency loss; switches in ``options``."""

    def __init__(self, encoder: MultiviewEncoder, n_views: int, options: dict | None = None):
        super().__init__()
        options = {**FACET_DEFAULTS, **(options or {})}
        dim, heads = encoder.out_dim, int(options["heads"])
        if (options["cvsa"] or options["mtgf"]) and dim % heads:
            raise ValueError(f"embedding size {dim} is not divisible by {heads} attention heads")
        self.encoder = encoder
        self.n_views = n_views
        self.cvsa = CrossViewSemanticAggregation(dim, n_views, heads) if options["cvsa"] else None
        self.mtgf = MultiviewTextGuidedFusion(dim, heads) if options["mtgf"] else None
        self.loss_settings = {key: options[key] for key in _LOSS_KEYS}

    def preprocess(self, images: Tensor) -> Tensor:
        return self.encoder.preprocess(images)

    def encode_views(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def _aggregate(self, z: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mask = check_view_mask(mask, z.shape[0], z.shape[1], z.device)
        if self.cvsa is None:
            return (z, *masked_mean(z, mask), mask)
        return (*self.cvsa(z, mask), mask)

    def fuse(self, z: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Text-free fused embedding: the CVSA-pooled view tokens, and the pooling weights."""
        _, pooled, weights, _ = self._aggregate(z, mask)
        return pooled, weights

    def _scores(self, z: Tensor, class_emb: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        tokens, pooled, weights, mask = self._aggregate(z, mask)
        out = {"z_views": z, "z_fused": pooled, "weights": weights}
        if self.mtgf is None:
            out["scores"] = F.normalize(pooled.float(), dim=-1) @ F.normalize(class_emb.float(), dim=-1).T
        else:
            out["scores"], out["class_fused"], out["view_attention"] = self.mtgf(tokens, class_emb, mask)
        return out

    def forward(self, images: Tensor, mask: Tensor | None = None, class_emb: Tensor | None = None) -> dict[str, Tensor]:
        """``z_views``, ``z_fused``, ``weights``; with ``class_emb`` also ``scores`` (B, K) (+ MTGF outputs)."""
        z = self.encode_views(images)
        if class_emb is None:
            z_fused, weights = self.fuse(z, mask)
            return {"z_views": z, "z_fused": z_fused, "weights": weights}
        return self._scores(z, class_emb, mask)

    def class_scores(self, images: Tensor, class_emb: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward(images, mask, class_emb)["scores"]

    def training_losses(self, batch_views_a: Tensor, batch_views_b: Tensor, clean_views: Tensor | None,
                        text_emb: Tensor, class_emb: Tensor, labels: Tensor, settings: dict | None = None,
                        mask: Tensor | None = None) -> dict[str, Tensor]:
        """ce_weight CE(MTGF scores / tau, labels) + vl_align_weight L_vl-align(views, pooled, text_emb)
        + consistency_weight L_cons + mv_bt_weight L_mv-bt. Terms with weight 0 are not computed.

        The classification views are ``clean_views`` or, when None, augmentation A.
        ``settings["gather"]`` (DDP) concatenates batch-first tensors over ranks before the losses.
        """
        settings = settings or {}
        options = {key: settings.get(key, default) for key, default in self.loss_settings.items()}
        gather = settings.get("gather") or (lambda tensor: tensor)
        tau = options["tau"]
        views = clean_views if clean_views is not None else batch_views_a
        out = {key: gather(value) for key, value in self._scores(self.encode_views(views), class_emb, mask).items()}
        mask = None if mask is None else gather(mask)
        zero = out["scores"].new_zeros(())
        terms = {
            "ce": prompt_classification_loss(out["scores"], gather(labels), tau) if options["ce_weight"] else zero,
            "vl_align": vl_align_loss(out["z_views"], out["z_fused"], gather(text_emb), tau, mask)
            if options["vl_align_weight"] else zero,
            "consistency": multiview_consistency_loss(out["z_views"], class_emb, tau, mask, options["consistency"])
            if options["consistency_weight"] else zero,
            "mv_bt": mv_bt_loss(gather(self.encode_views(batch_views_a)), gather(self.encode_views(batch_views_b)),
                                options["lambd_mv_bt"]) if options["mv_bt_weight"] else zero,
        }
        terms["total"] = (options["ce_weight"] * terms["ce"] + options["vl_align_weight"] * terms["vl_align"]
                          + options["consistency_weight"] * terms["consistency"] + options["mv_bt_weight"] * terms["mv_bt"])
        return terms
