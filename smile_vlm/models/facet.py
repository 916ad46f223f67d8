"""FACET-VLM: CVSA, MTGF and the multiview consistency loss, as INTERPRETATIONS of the abstract.

Only the abstract of FACET-VLM (Neurocomputing 657, 131621, 2025) could be read. It names three
components (Cross-View Semantic Aggregation "for view-consistent fusion", Multiview Text-Guided
Fusion "for semantically aligned facial emotions", a multiview consistency loss "to enforce
structural coherence across views") and gives no equation. Every design below is ours, chosen to
match those words; alternatives we considered are listed in each docstring.

The model shares SMILE-VLM's vision side (one encoder f_v and projector g_v for all views) and its
interface (see common.py). The text encoder is frozen and outside the model: class prompt
embeddings (K, D) arrive as inputs. The attention layers' query/key/value projections are the
only trainable maps applied to the text embeddings (inside MTGF); they are part of the model.

Variant keys (``variant["facet"]``, or ``variant["loss"]`` for the loss ones), defaults in
FACET_DEFAULTS: ``cvsa`` and ``mtgf`` (bool ablation switches), ``heads``,
``consistency_weight`` (0 disables), ``consistency`` ("sym_kl" | "cosine"), ``ce_weight``, ``mtgf_align_weight``,
``vl_align_weight``, ``mv_bt_weight``, ``lambd_mv_bt``, ``tau``.

Supervision (``FacetVLM.supervision`` names it in every table row). With ``ce_weight`` > 0 the
main term is a cross-entropy on the class labels over the MTGF prompt scores: direct supervision,
which the abstract does not list (workflow variant ``facet_vlm_supervised``). With ``ce_weight: 0``
and ``mtgf_align_weight: 1`` (variant ``facet_vlm_prompt``) the training signal is of SMILE-VLM's
kind: InfoNCE (SMILE-VLM Eq. 6) against one prompt per sample chosen by its class, on the views,
the pooled embedding and the MTGF scores, plus the label-free consistency loss. (Without the MTGF
term nothing would train MTGF, which computes the zero-shot scores.)
With ``prompts.source: pseudo`` the cross-entropy, like the prompts, uses the model's own
zero-shot pseudo-labels (train.py), so no true label reaches training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smile_vlm.losses import (multiview_consistency_loss, mv_bt_loss,
                              prompt_classification_loss, prompt_contrastive_loss, vl_align_loss)
from smile_vlm.models.common import MultiviewEncoder, check_view_mask, describe_supervision, masked_mean, running_stats_frozen
from smile_vlm.settings import VARIANT_DEFAULTS

# Defaults and their meaning: the schema's $defs/variant_defaults.facet.
FACET_DEFAULTS = VARIANT_DEFAULTS["facet"]
_LOSS_KEYS = ("consistency", "consistency_weight", "ce_weight", "mtgf_align_weight", "vl_align_weight", "mv_bt_weight",
              "lambd_mv_bt", "tau")


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

    # CVSA pools its view tokens with a plain masked mean: the weights ``fuse`` returns are uniform
    # by construction, so they are left out of the view-weight figure (evaluate.py).
    learns_view_weights = False

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

    def supervision(self, prompts_source: str) -> str:
        options = self.loss_settings
        prompts = bool(options["vl_align_weight"] or options["mtgf_align_weight"])
        return describe_supervision(prompts_source, bool(options["ce_weight"]), prompts)

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

    def _scores(self, z: Tensor, class_emb: Tensor, mask: Tensor | None, prompt_emb: Tensor | None = None
                ) -> dict[str, Tensor]:
        """Scores against the class embeddings; with ``prompt_emb`` (P, D) also ``prompt_scores``
        (B, P), the same text-guided scoring against other texts (the batch's prompts)."""
        tokens, pooled, weights, mask = self._aggregate(z, mask)
        out = {"z_views": z, "z_fused": pooled, "weights": weights}
        out["scores"] = self._text_scores(tokens, pooled, class_emb, mask, out)
        if prompt_emb is not None:
            out["prompt_scores"] = self._text_scores(tokens, pooled, prompt_emb, mask)
        return out

    def _text_scores(self, tokens: Tensor, pooled: Tensor, text: Tensor, mask: Tensor, out: dict | None = None) -> Tensor:
        if self.mtgf is None:
            return F.normalize(pooled.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
        scores, fused, attention = self.mtgf(tokens, text, mask)
        if out is not None:
            out["class_fused"], out["view_attention"] = fused, attention
        return scores

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
                        text_emb: Tensor, class_emb: Tensor, labels: Tensor,
                        mask: Tensor | None = None) -> dict[str, Tensor]:
        """ce_weight CE(MTGF scores / tau, labels) + mtgf_align_weight L_mtgf-align + vl_align_weight
        L_vl-align(views, pooled, text_emb) + consistency_weight L_cons + mv_bt_weight L_mv-bt. Terms
        with weight 0 are not computed.

        L_mtgf-align is SMILE-VLM's Eq. 6 InfoNCE with MTGF as the similarity: sample b's fusion
        queried by its own prompt t_b must score higher than by the batch's other prompts t_j.

        The classification views are ``clean_views`` or, when None, augmentation A. Under DDP the
        trainer makes ``encode_views`` return the global batch and gathers ``text_emb`` and ``labels``.
        """
        options = self.loss_settings
        tau = options["tau"]
        views = clean_views if clean_views is not None else batch_views_a
        out = self._scores(self.encode_views(views), class_emb, mask,
                           text_emb if options["mtgf_align_weight"] else None)
        zero = out["scores"].new_zeros(())
        terms = {
            "ce": prompt_classification_loss(out["scores"], labels, tau) if options["ce_weight"] else zero,
            "mtgf_align": prompt_contrastive_loss(out["prompt_scores"], tau) if options["mtgf_align_weight"] else zero,
            "vl_align": vl_align_loss(out["z_views"], out["z_fused"], text_emb, tau, mask)
            if options["vl_align_weight"] else zero,
            "consistency": multiview_consistency_loss(out["z_views"], class_emb, tau, mask, options["consistency"])
            if options["consistency_weight"] else zero,
            "mv_bt": self._mv_bt(batch_views_a, batch_views_b, options["lambd_mv_bt"])
            if options["mv_bt_weight"] else zero,
        }
        terms["total"] = (options["ce_weight"] * terms["ce"] + options["mtgf_align_weight"] * terms["mtgf_align"]
                          + options["vl_align_weight"] * terms["vl_align"]
                          + options["consistency_weight"] * terms["consistency"] + options["mv_bt_weight"] * terms["mv_bt"])
        return terms

    def _mv_bt(self, views_a: Tensor, views_b: Tensor, lambd: float) -> Tensor:
        # The classification pass above already updated the BatchNorm running statistics.
        with running_stats_frozen(self):
            z_a, z_b = self.encode_views(views_a), self.encode_views(views_b)
        return mv_bt_loss(z_a, z_b, lambd)
