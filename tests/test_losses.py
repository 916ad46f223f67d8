"""Losses against values computed by hand on tiny tensors, plus the identities they must satisfy."""

import math

import pytest
import torch

from smile_vlm.losses import (
    BARLOW_TWINS_LAMBDA,
    CLIP_TEMPERATURE,
    batch_standardize,
    multiview_consistency_loss,
    mv_bt_loss,
    prompt_classification_loss,
    red_min_loss,
    smile_vlm_loss,
    vl_align_loss,
)

# Every column below has batch variance exactly 1, so BatchNorm1d(affine=False) scales by 1/sqrt(1 + eps).
S2 = 1 / (1 + 1e-5)  # the square of that factor: what a product of two standardised columns carries
LAMBD = 0.25

# B = 2, V = 2, D = 2. Standardised columns are +-1 (times sqrt(S2)), worked out below.
Z_A = torch.tensor([[[1.0, 3.0], [0.0, 5.0]],  # sample 0: view 0, view 1
                    [[3.0, 1.0], [2.0, 7.0]]])  # sample 1
Z_B = torch.tensor([[[0.0, 0.0], [4.0, 1.0]],
                    [[2.0, 2.0], [2.0, 3.0]]])
# view 0: BN(zA) = [[-1, 1], [1, -1]], BN(zB) = [[-1, -1], [1, 1]] -> C_0 = [[1, 1], [-1, -1]] S2
# view 1: BN(zA) = [[-1, -1], [1, 1]], BN(zB) = [[1, -1], [-1, 1]] -> C_1 = [[-1, 1], [-1, 1]] S2
# mean:   C_bar = [[0, 1], [-1, 0]] S2


def test_batch_standardize_matches_batchnorm_in_training_mode():
    z = torch.tensor([[1.0, 10.0], [2.0, 20.0], [6.0, 0.0]])
    batch_norm = torch.nn.BatchNorm1d(2, affine=False).train()
    torch.testing.assert_close(batch_standardize(z), batch_norm(z))


def test_mv_bt_mean_matrix_by_hand():
    expected = 2 * (0 - 1) ** 2 + LAMBD * 2 * S2 ** 2  # diagonal of C_bar is 0, off-diagonal +-S2
    assert mv_bt_loss(Z_A, Z_B, lambd=LAMBD).item() == pytest.approx(expected, rel=1e-6)


def test_mv_bt_mean_loss_by_hand_and_jensen():
    # each C_i has diagonal (S2, -S2) or (-S2, S2) and two off-diagonal entries of magnitude S2
    per_view = (S2 - 1) ** 2 + (-S2 - 1) ** 2 + LAMBD * 2 * S2 ** 2
    mean_loss = mv_bt_loss(Z_A, Z_B, lambd=LAMBD, reduction="mean_loss")
    assert mean_loss.item() == pytest.approx(per_view, rel=1e-6)
    assert mv_bt_loss(Z_A, Z_B, lambd=LAMBD).item() <= mean_loss.item()


def test_mean_matrix_never_exceeds_mean_loss_on_random_batches():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        z_a, z_b = torch.randn(2, 8, 3, 5, generator=generator)
        z_b = z_b + z_a  # partly correlated twins, like real augmentations
        assert mv_bt_loss(z_a, z_b) <= mv_bt_loss(z_a, z_b, reduction="mean_loss") + 1e-6


def test_one_view_reductions_agree():
    z_a, z_b = torch.randn(2, 6, 1, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(mv_bt_loss(z_a, z_b), mv_bt_loss(z_a, z_b, reduction="mean_loss"))


def test_perfectly_correlated_twins_have_zero_on_diagonal_term():
    z_a = torch.randn(16, 3, 4, generator=torch.Generator().manual_seed(2))
    z_b = 2.5 * z_a - 7.0  # any positive affine map standardises to the same columns
    assert mv_bt_loss(z_a, z_b, lambd=0.0).item() < 1e-8


def test_mv_bt_is_invariant_to_permuting_views():
    z_a, z_b = torch.randn(2, 10, 4, 3, generator=torch.Generator().manual_seed(3))
    order = torch.tensor([2, 0, 3, 1])
    for reduction in ("mean_matrix", "mean_loss"):
        torch.testing.assert_close(mv_bt_loss(z_a, z_b, reduction=reduction),
                                   mv_bt_loss(z_a[:, order], z_b[:, order], reduction=reduction))


def test_mv_bt_gradient_is_finite_even_for_a_constant_dimension():
    z_a = torch.randn(8, 2, 3, generator=torch.Generator().manual_seed(4))
    z_a[:, :, 0] = 1.0  # zero batch variance: eps keeps the standardisation finite
    z_a.requires_grad_(True)
    z_b = torch.randn(8, 2, 3, generator=torch.Generator().manual_seed(5), requires_grad=True)
    mv_bt_loss(z_a, z_b).backward()
    assert torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()
    assert z_b.grad.abs().sum() > 0


def test_mv_bt_refuses_a_single_sample_batch():
    with pytest.raises(ValueError, match="at least 2"):
        mv_bt_loss(torch.ones(1, 2, 3), torch.ones(1, 2, 3))


def test_vl_align_by_hand():
    tau = 0.5
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    views = torch.tensor([[[3.0, 0.0]], [[0.0, 0.2]]])  # cosine ignores the scale
    fused = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # sample 1's fused embedding points at text 0
    easy, hard = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))  # margins of +-1/tau = +-2
    expected = (easy + easy + easy + hard) / ((1 + 1) * 2)  # (V + 1) B terms
    assert vl_align_loss(views, fused, text, tau).item() == pytest.approx(expected, rel=1e-6)


def test_vl_align_view_mask_drops_absent_views():
    tau = 0.5
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    views = torch.tensor([[[3.0, 0.0], [0.0, 1.0]],  # sample 0: view 1 points at the wrong text
                          [[0.0, 0.2], [5.0, 5.0]]])  # sample 1: view 1 is absent (garbage)
    fused = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    easy, hard = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    expected = (easy + easy + hard + easy + hard) / (3 + 2)  # 3 present views + B fused terms
    assert vl_align_loss(views, fused, text, tau, view_mask=mask).item() == pytest.approx(expected, rel=1e-6)


def test_red_min_by_hand_for_both_targets():
    z_fused = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    z_text = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # C_vt = [[1, 1], [-1, -1]] S2
    identity = (S2 - 1) ** 2 + (-S2 - 1) ** 2 + LAMBD * 2 * S2 ** 2
    assert red_min_loss(z_fused, z_text, LAMBD).item() == pytest.approx(identity, rel=1e-6)
    off = red_min_loss(z_fused, z_text, LAMBD, target="off_diagonal")
    assert off.item() == pytest.approx(LAMBD * 2 * S2 ** 2, rel=1e-6)


def _optimise_red_min(target: str, steps: int = 400) -> float:
    """Minimise red-min over free visual embeddings against text with only K = 2 distinct rows."""
    generator = torch.Generator().manual_seed(6)
    rows = torch.tensor([[1.0, 2.0, 0.0, 5.0], [3.0, -1.0, 1.0, 2.0]])  # every column differs
    z_text = rows[torch.arange(12) % 2]
    z_fused = torch.randn(12, 4, generator=generator, requires_grad=True)
    optimizer = torch.optim.Adam([z_fused], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = red_min_loss(z_fused, z_text, lambd=0.5, target=target)
        loss.backward()
        optimizer.step()
    return red_min_loss(z_fused, z_text, lambd=0.5, target=target).item()


def test_red_min_identity_target_has_the_rank_floor():
    # BN(text) has rank K - 1 = 1: C = a s^T with s_l = +-1, so the loss is
    # sum_k (a_k s_k - 1)^2 + lambd (D - 1) a_k^2, minimised at a_k s_k = 1 / (1 + lambd (D - 1)):
    # floor = D lambd (D - 1) / (1 + lambd (D - 1)) = 4 * 1.5 / 2.5 = 2.4.
    reached = _optimise_red_min("identity")
    assert reached == pytest.approx(2.4, abs=0.05)
    assert reached > 2.4 - 1e-3


def test_red_min_off_diagonal_target_has_no_floor():
    assert _optimise_red_min("off_diagonal") < 1e-2


def test_smile_vlm_loss_weights_terms_as_eq_10():
    generator = torch.Generator().manual_seed(7)
    z_a, z_b, z_views = torch.randn(3, 6, 2, 4, generator=generator)
    z_fused, z_text = torch.randn(2, 6, 4, generator=generator)
    paper = {"lambd_mv_bt": BARLOW_TWINS_LAMBDA, "lambd_red_min": BARLOW_TWINS_LAMBDA, "tau": CLIP_TEMPERATURE,
             "mv_bt_reduction": "mean_matrix", "red_min_target": "identity"}
    terms = smile_vlm_loss(z_a, z_b, z_views, z_fused, z_text, alpha=0.5, beta=2.0, gamma=0.1, **paper)
    assert set(terms) == {"mv_bt", "vl_align", "red_min", "total"}
    torch.testing.assert_close(terms["mv_bt"], mv_bt_loss(z_a, z_b))
    torch.testing.assert_close(terms["vl_align"], vl_align_loss(z_views, z_fused, z_text))
    torch.testing.assert_close(terms["red_min"], red_min_loss(z_fused, z_text))
    torch.testing.assert_close(terms["total"], 0.5 * terms["mv_bt"] + 2.0 * terms["vl_align"] + 0.1 * terms["red_min"])
    assert smile_vlm_loss(z_a, z_b, z_views, z_fused, z_text, alpha=1.0, beta=1.0, gamma=0.0,
                          **paper)["red_min"].item() == 0.0


def test_consistency_sym_kl_by_hand():
    # tau 1, views at the two class prompts: p_0 = (s, 1 - s), p_1 = (1 - s), s) with s = sigmoid(1);
    # 1/2 sum_k (p_0 - p_1)(log p_0 - log p_1) = 1/2 * 2 (2s - 1) * 1 = 2s - 1 = tanh(1/2).
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    classes = torch.eye(2)
    value = multiview_consistency_loss(z, classes, tau=1.0)
    assert value.item() == pytest.approx(math.tanh(0.5), rel=1e-6)
    assert multiview_consistency_loss(z, classes, kind="cosine").item() == pytest.approx(1.0)


def test_consistency_is_zero_for_identical_views_and_skips_absent_ones():
    generator = torch.Generator().manual_seed(8)
    view = torch.randn(4, 1, 6, generator=generator)
    classes = torch.randn(3, 6, generator=generator)
    same = view.expand(4, 3, 6)
    for kind in ("sym_kl", "cosine"):
        assert multiview_consistency_loss(same, classes, kind=kind).abs().item() < 1e-6
    different = torch.cat([same[:, :2], torch.randn(4, 1, 6, generator=generator)], dim=1)
    assert multiview_consistency_loss(different, classes).item() > 1e-4
    mask = torch.tensor([[True, True, False]]).expand(4, 3)  # the differing view is absent
    assert multiview_consistency_loss(different, classes, view_mask=mask).abs().item() < 1e-6
    assert multiview_consistency_loss(view, classes).item() == 0.0  # one view: no pair


def test_prompt_classification_loss_by_hand():
    scores = torch.tensor([[1.0, 0.0], [0.3, 0.3]])
    labels = torch.tensor([0, -1])  # the second sample is unlabelled
    assert prompt_classification_loss(scores, labels, tau=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    multi_hot = torch.tensor([[1, 1], [0, 0]])
    log_p = torch.log_softmax(torch.tensor([1.0, 0.0]), dim=0)
    expected = -(0.5 * log_p[0] + 0.5 * log_p[1]).item()
    assert prompt_classification_loss(scores, multi_hot, tau=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_losses_stay_in_float32_under_autocast():
    generator = torch.Generator().manual_seed(9)
    z_a, z_b = torch.randn(2, 16, 3, 32, generator=generator)
    text = torch.randn(16, 32, generator=generator)
    reference = (mv_bt_loss(z_a, z_b), red_min_loss(z_a[:, 0], text), vl_align_loss(z_a, z_b[:, 0], text))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = (mv_bt_loss(z_a, z_b), red_min_loss(z_a[:, 0], text), vl_align_loss(z_a, z_b[:, 0], text))
    for expected, value in zip(reference, mixed):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected)
