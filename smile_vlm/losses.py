"""Losses of SMILE-VLM (Eq. 1-10 of the paper) and the shared pieces FACET-VLM reuses.

Notation follows the paper: B batch size, V (the paper's N) number of views, D embedding size.

* ``mv_bt_loss``      multi-view Barlow Twins, Eq. 1-4
* ``vl_align_loss``   vision-language InfoNCE over every view and the fused embedding, Eq. 6
* ``red_min_loss``    cross-modal redundancy minimisation, Eq. 8-9
* ``smile_vlm_loss``  the weighted sum, Eq. 10
* ``au_align_loss``   our addition for the pretraining (not in the paper): sigmoid alignment of
                      every view and the fused embedding with single-action-unit phrases (SigLIP)

Every correlation matrix is computed on batch-standardised embeddings, as the Barlow Twins
reference does (``BatchNorm1d(affine=False)`` in training mode: batch mean, biased batch variance,
eps 1e-5), and in float32 so that the loss is the same under mixed precision.

Defaults: ``lambd = 0.0051`` is the Barlow Twins reference value (tuned there for D = 8192; the
paper gives no value for its lambda_mv-bt or lambda_red-min); ``tau = 0.07`` is CLIP's initial
temperature (the paper gives no value).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

BARLOW_TWINS_LAMBDA = 0.0051  # facebookresearch/barlowtwins main.py --lambd default
CLIP_TEMPERATURE = 0.07  # openai/CLIP logit_scale init = log(1 / 0.07)
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d default, as in the Barlow Twins reference

MV_BT_REDUCTIONS = ("mean_matrix", "mean_loss")
RED_MIN_TARGETS = ("identity", "off_diagonal")


def full_precision(loss_fn):
    """Run a loss with autocast disabled: under AMP, autocast would recast the float32 inputs of
    every matmul to half precision, and correlations of standardised columns need float32."""

    @functools.wraps(loss_fn)
    def wrapper(*args, **kwargs):
        device = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)).device
        with torch.autocast(device.type, enabled=False):
            return loss_fn(*args, **kwargs)

    return wrapper


def batch_standardize(z: Tensor, eps: float = BATCH_NORM_EPS) -> Tensor:
    """Standardise each column of ``z`` (B, D) over the batch, in float32.

    Same numbers as ``BatchNorm1d(D, affine=False)`` in training mode: the variance is the biased
    one (divided by B), so ``diag(bn(z).T @ bn(z) / B)`` is 1 up to eps.
    """
    if z.shape[0] < 2:
        raise ValueError(f"batch standardisation needs at least 2 samples, got a batch of {z.shape[0]}")
    z = z.float()
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z_a: Tensor, z_b: Tensor) -> Tensor:
    """Empirical cross-correlation of two (B, D) batches: BN(z_a)^T BN(z_b) / B (Eq. 1 and Eq. 8)."""
    return batch_standardize(z_a).T @ batch_standardize(z_b) / z_a.shape[0]


def off_diagonal(matrix: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, flattened (the Barlow Twins reference trick)."""
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins_terms(c: Tensor) -> tuple[Tensor, Tensor]:
    """(on-diagonal, off-diagonal) sums of the Barlow Twins objective for a D x D matrix (Eq. 4).

    on = sum_k (C_kk - 1)^2 and off = sum_{k != l} C_kl^2: sums, not means, as in the reference.
    """
    on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
    return on_diagonal, off_diagonal(c).pow(2).sum()


@full_precision
def mv_bt_loss(
    z_a: Tensor, z_b: Tensor, lambd: float = BARLOW_TWINS_LAMBDA, reduction: str = "mean_matrix"
) -> Tensor:
    """Multi-view Barlow Twins loss L_mv-bt (Eq. 1-4).

    ``z_a``, ``z_b``: (B, V, D) projected embeddings of two stochastic augmentations of each view.

    * Eq. 1: per view i, C_i = BN(z_i^A)^T BN(z_i^B) / B (BN: batch standardisation, see module doc).
    * Eq. 2: C_bar = (1/V) sum_i C_i.
    * Eq. 3-4: L = sum_k (C_bar_kk - 1)^2 + lambd sum_{k != l} C_bar_kl^2.

    ``reduction="mean_matrix"`` is the paper's Eq. 3 (loss of the mean matrix). ``"mean_loss"`` is the
    other reading, (1/V) sum_i L_BT(C_i) (mean of per-view Barlow Twins losses). L_BT is convex in C,
    so by Jensen mean_matrix <= mean_loss; they agree for V = 1 or identical per-view matrices.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 3:
        raise ValueError(f"z_a and z_b must both be (B, V, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    if reduction not in MV_BT_REDUCTIONS:
        raise ValueError(f"reduction must be one of {MV_BT_REDUCTIONS}, got {reduction!r}")
    n_views = z_a.shape[1]
    per_view = [cross_correlation(z_a[:, i], z_b[:, i]) for i in range(n_views)]  # Eq. 1
    if reduction == "mean_matrix":
        on_diagonal, off = barlow_twins_terms(torch.stack(per_view).mean(dim=0))  # Eq. 2, Eq. 4
        return on_diagonal + lambd * off
    losses = [on + lambd * off for on, off in map(barlow_twins_terms, per_view)]
    return torch.stack(losses).mean()


def _info_nce_terms(queries: Tensor, keys: Tensor, tau: float, negatives: Tensor | None = None,
                    negative_mask: Tensor | None = None) -> Tensor:
    """-log softmax_j(sim(q_b, k_j) / tau) at j = b, per row b: the summand of Eq. 6; with
    ``negatives`` (M, D) also in the softmax where ``negative_mask`` (B, M) is True."""
    logits = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / tau
    if negatives is not None:
        extra = F.normalize(queries.float(), dim=-1) @ F.normalize(negatives.float(), dim=-1).T / tau
        logits = torch.cat([logits, extra.masked_fill(~negative_mask.to(extra.device), float("-inf"))], dim=1)
    targets = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, targets, reduction="none")


@full_precision
def vl_align_loss(
    z_views: Tensor,
    z_fused: Tensor,
    z_text: Tensor,
    tau: float = CLIP_TEMPERATURE,
    view_mask: Tensor | None = None,
    negatives: Tensor | None = None,
    negative_mask: Tensor | None = None,
) -> Tensor:
    """Vision-language alignment L_vl-align (Eq. 6).

    InfoNCE of each view embedding z'_{i,b} (``z_views`` (B, V, D)) and of the fused embedding
    z^mv_b (``z_fused`` (B, D)) against the batch's text embeddings z^t (``z_text`` (B, D)), with
    cosine similarity / tau; sample b's own text is the positive, the other B - 1 texts are the
    negatives (image-to-text direction only, as Eq. 6 writes it). The sum of the (V + 1) B terms is
    divided by (V + 1) B.

    ``view_mask`` (B, V) bool, True = view present: absent views contribute no term and the divisor
    becomes (number of present views + B). As in Eq. 6, two samples that drew the same prompt are
    still each other's negatives.

    ``negatives`` (M, D), our addition for replay (``smile_vlm.replay``): further texts in every
    softmax, each only for the samples where ``negative_mask`` (B, M) is True.
    """
    batch, n_views, _ = z_views.shape
    extra = (negatives, negative_mask if negative_mask is not None else
             torch.ones(batch, len(negatives), dtype=torch.bool)) if negatives is not None else ()
    view_terms = torch.stack([_info_nce_terms(z_views[:, i], z_text, tau, *extra) for i in range(n_views)], dim=1)
    fused_terms = _info_nce_terms(z_fused, z_text, tau, *extra)
    if view_mask is None:
        return (view_terms.sum() + fused_terms.sum()) / ((n_views + 1) * batch)
    view_mask = view_mask.to(device=view_terms.device, dtype=torch.bool)
    n_terms = view_mask.sum() + batch
    return (view_terms[view_mask].sum() + fused_terms.sum()) / n_terms


@full_precision
def red_min_loss(
    z_fused: Tensor, z_text: Tensor, lambd: float = BARLOW_TWINS_LAMBDA, target: str = "identity"
) -> Tensor:
    """Cross-modal redundancy minimisation L_red-min (Eq. 8-9).

    Eq. 8: C_vt = BN(z^mv)^T BN(z^t) / B. The paper writes Eq. 8 on the raw embeddings, but then
    C_vt has no fixed scale (it grows with the embeddings' norms) and the target "diagonal -> 1" of
    Eq. 9 is meaningless; we standardise each dimension over the batch exactly as the Barlow Twins
    reference does before its correlation, which makes C_vt a correlation matrix.

    Eq. 9 (``target="identity"``): sum_k (C_vt_kk - 1)^2 + lambd sum_{k != l} C_vt_kl^2.
    ``target="off_diagonal"``: lambd sum_{k != l} C_vt_kl^2 only (pure redundancy reduction).

    Rank floor of the identity target: the text side comes from a frozen encoder and a batch holds
    at most K distinct prompts' worth of classes (K = 6 or 7; with one prompt per class exactly K
    distinct rows), so BN(z^t) has rank <= K - 1 and so has C_vt. The identity (rank D) is
    unreachable for D > K - 1 and the diagonal term keeps a positive floor; the off-diagonal target
    has no such floor.
    """
    if target not in RED_MIN_TARGETS:
        raise ValueError(f"target must be one of {RED_MIN_TARGETS}, got {target!r}")
    c = cross_correlation(z_fused, z_text)  # Eq. 8
    on_diagonal, off = barlow_twins_terms(c)  # Eq. 9
    if target == "off_diagonal":
        return lambd * off
    return on_diagonal + lambd * off


def smile_vlm_loss(
    z_a: Tensor,
    z_b: Tensor,
    z_views: Tensor,
    z_fused: Tensor,
    z_text: Tensor,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    lambd_mv_bt: float,
    lambd_red_min: float,
    tau: float,
    mv_bt_reduction: str,
    red_min_target: str,
    view_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """The SMILE-VLM objective (Eq. 10): alpha L_mv-bt + beta L_vl-align + gamma L_red-min.

    Returns ``{"mv_bt", "vl_align", "red_min", "total"}``. The paper gives no values for alpha,
    beta, gamma; every weight is the variant's ``loss`` setting (the schema's variant_defaults). A term whose weight is 0 is not computed (its entry
    is a zero tensor), so ablations cost nothing.
    """
    zero = z_fused.new_zeros((), dtype=torch.float32)
    terms = {
        "mv_bt": mv_bt_loss(z_a, z_b, lambd_mv_bt, mv_bt_reduction) if alpha else zero,
        "vl_align": vl_align_loss(z_views, z_fused, z_text, tau, view_mask) if beta else zero,
        "red_min": red_min_loss(z_fused, z_text, lambd_red_min, red_min_target) if gamma else zero,
    }
    terms["total"] = alpha * terms["mv_bt"] + beta * terms["vl_align"] + gamma * terms["red_min"]
    return terms


@full_precision
def au_align_loss(
    z_views: Tensor,
    z_fused: Tensor,
    z_units: Tensor,
    targets: Tensor,
    known: Tensor,
    scale: Tensor,
    bias: Tensor,
    view_mask: Tensor | None = None,
) -> Tensor:
    """Action-unit alignment L_au-align, our addition to the pretraining (not in SMILE-VLM).

    The sigmoid loss of SigLIP (Zhai et al., "Sigmoid Loss for Language Image Pre-Training",
    ICCV 2023, Eq. 1 there), applied to fixed phrases instead of the batch's captions: every
    embedding e (each view z'_{i,b} of ``z_views`` (B, V, D) and the fused z^mv_b of ``z_fused``
    (B, D)) against every phrase embedding u_k (``z_units`` (K, D), one single-AU phrase per row)::

        L = -1/|P| sum_{(e, k) in P} log sigmoid(y_bk (t cos(e, u_k) + c))

    with y_bk = +1 where ``targets`` (B, K) is 1 (sample b shows phrase k) and -1 where it is 0,
    t = ``scale`` and c = ``bias`` (scalar tensors, learnable in SigLIP), and P the pairs whose
    ``known`` (B, K) is True and whose view is present (``view_mask`` (B, V), as in Eq. 6).
    SigLIP sums over a sample's pairs and divides by the batch; dividing by |P| instead keeps the
    term's size independent of K (the number of phrases).
    """
    embeddings = torch.cat([z_views, z_fused.unsqueeze(1)], dim=1).float()  # (B, V + 1, D)
    cosines = F.normalize(embeddings, dim=-1) @ F.normalize(z_units.float(), dim=-1).T  # (B, V + 1, K)
    signs = (2 * targets.float() - 1).unsqueeze(1)
    terms = -F.logsigmoid(signs * (scale.float() * cosines + bias.float()))
    present = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=embeddings.device)
    if view_mask is not None:
        present[:, :-1] = view_mask.to(device=embeddings.device, dtype=torch.bool)
    pairs = present.unsqueeze(2) & known.to(device=embeddings.device, dtype=torch.bool).unsqueeze(1)
    if not pairs.any():
        return terms.new_zeros(())
    return terms[pairs].sum() / pairs.sum()


# --------------------------------------------------------------------------------------------
# FACET-VLM. The paper is known only from its abstract: these are interpretations (see facet.py).

CONSISTENCY_KINDS = ("sym_kl", "cosine")


def _view_pair_mean(pair_values: Tensor, view_mask: Tensor | None) -> Tensor:
    """Mean of (B, V, V) pairwise values over pairs i < j with both views present (0 if none)."""
    batch, n_views, _ = pair_values.shape
    upper = torch.triu(torch.ones(n_views, n_views, dtype=torch.bool, device=pair_values.device), diagonal=1)
    valid = upper.expand(batch, -1, -1)
    if view_mask is not None:
        present = view_mask.to(device=pair_values.device, dtype=torch.bool)
        valid = valid & present.unsqueeze(2) & present.unsqueeze(1)
    if not valid.any():
        return pair_values.new_zeros(())
    return pair_values[valid].mean()


@full_precision
def multiview_consistency_loss(
    z_views: Tensor,
    class_emb: Tensor | None = None,
    tau: float = CLIP_TEMPERATURE,
    view_mask: Tensor | None = None,
    kind: str = "sym_kl",
) -> Tensor:
    """FACET-VLM multiview consistency loss (interpretation of the abstract's "structural coherence").

    ``kind="sym_kl"``: per view i the class posterior p_i = softmax_k(cos(z_i, t_k) / tau) over the
    class text embeddings ``class_emb`` (K, D); the loss is the mean over view pairs i < j (and
    samples) of the symmetric KL 1/2 [KL(p_i || p_j) + KL(p_j || p_i)] = 1/2 sum_k (p_i - p_j)(log p_i - log p_j).
    ``kind="cosine"``: mean over view pairs of 1 - cos(z_i, z_j) (no text needed).
    Pairs with an absent view (``view_mask`` False) are skipped; one view gives 0.
    """
    if kind not in CONSISTENCY_KINDS:
        raise ValueError(f"consistency kind must be one of {CONSISTENCY_KINDS}, got {kind!r}")
    z = F.normalize(z_views.float(), dim=-1)
    if kind == "cosine":
        return _view_pair_mean(1 - z @ z.transpose(1, 2), view_mask)
    if class_emb is None:
        raise ValueError("the sym_kl consistency loss needs the class text embeddings")
    log_p = torch.log_softmax(z @ F.normalize(class_emb.float(), dim=-1).T / tau, dim=-1)  # (B, V, K)
    p = log_p.exp()
    jeffreys = ((p.unsqueeze(2) - p.unsqueeze(1)) * (log_p.unsqueeze(2) - log_p.unsqueeze(1))).sum(-1)
    return _view_pair_mean(0.5 * jeffreys, view_mask)


@full_precision
def prompt_classification_loss(scores: Tensor, labels: Tensor, tau: float = CLIP_TEMPERATURE) -> Tensor:
    """Cross-entropy over prompt similarities: CE(scores / tau, label), scores = cos to class prompts.

    ``labels`` (B,) class indices (-1 = unlabelled, ignored) or (B, K) multi-hot (4DME): then the
    target is the multi-hot row normalised to a distribution (rows without a positive are ignored).
    """
    logits = scores.float() / tau
    if labels.dim() == 2:
        targets = labels.float()
        keep = targets.sum(dim=1) > 0
        if not keep.any():
            return logits.new_zeros(())
        targets = targets[keep] / targets[keep].sum(dim=1, keepdim=True)
        return F.cross_entropy(logits[keep], targets)
    keep = labels >= 0
    if not keep.any():
        return logits.new_zeros(())
    return F.cross_entropy(logits[keep], labels[keep].long())


@full_precision
def prompt_contrastive_loss(prompt_scores: Tensor, tau: float = CLIP_TEMPERATURE) -> Tensor:
    """InfoNCE over the batch's prompts (the image-to-text direction of Eq. 6 of SMILE-VLM) for a
    precomputed similarity: ``prompt_scores`` (B, B), entry (b, j) = similarity of sample b to the
    prompt drawn for sample j; the diagonal holds the positives. Mean over the B samples."""
    if prompt_scores.dim() != 2 or prompt_scores.shape[0] != prompt_scores.shape[1]:
        raise ValueError(f"prompt scores must be (B, B), got {tuple(prompt_scores.shape)}")
    targets = torch.arange(prompt_scores.shape[0], device=prompt_scores.device)
    return F.cross_entropy(prompt_scores.float() / tau, targets)
