import numpy as np
import pytest

from smile_vlm.dynamic import (
    approximate_rank_pooling,
    approximate_rank_pooling_weights,
    exact_rank_pooling,
    sample_frames,
    to_uint8,
)


@pytest.mark.parametrize(
    "n_frames, expected",
    [
        (1, [1.0]),
        (2, [-0.5, 0.5]),
        (3, [-4 / 3, 2 / 3, 2 / 3]),
        (5, [-3.7, 0.3, 1.3, 1.3, 0.8]),
    ],
)
def test_weights_hand_computed(n_frames, expected):
    np.testing.assert_allclose(approximate_rank_pooling_weights(n_frames), expected, atol=1e-12)


@pytest.mark.parametrize("n_frames", range(2, 101))
def test_weights_match_authors_loop_and_sum_to_zero(n_frames):
    # vl_nnarpooltemporal.m: fw(i) = sum((2*(i:N) - N - 1) ./ (i:N))
    loop = [sum((2 * j - n_frames - 1) / j for j in range(i, n_frames + 1)) for i in range(1, n_frames + 1)]
    weights = approximate_rank_pooling_weights(n_frames)
    np.testing.assert_allclose(weights, loop, atol=1e-9)
    assert abs(weights.sum()) < 1e-9


def test_pooling_is_weighted_sum_and_static_content_cancels():
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 255, size=(3, 4, 5, 3))
    expected = -4 / 3 * frames[0] + 2 / 3 * frames[1] + 2 / 3 * frames[2]
    pooled = approximate_rank_pooling(frames)
    assert pooled.dtype == np.float32 and pooled.shape == (4, 5, 3)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-3)

    constant = np.repeat(frames[:1], 7, axis=0)
    np.testing.assert_allclose(approximate_rank_pooling(constant), 0.0, atol=1e-3)
    np.testing.assert_array_equal(approximate_rank_pooling(frames[:1]), frames[0].astype(np.float32))


def test_exact_pooling_points_along_the_brightening_direction():
    rng = np.random.default_rng(1)
    base = rng.uniform(40, 120, size=(8, 8, 3))
    direction = rng.uniform(0, 1, size=(8, 8, 3)) * (rng.uniform(size=(8, 8, 3)) > 0.5)
    frames = np.stack([base + 10.0 * t * direction for t in range(10)])
    pooled = exact_rank_pooling(frames)
    assert pooled.shape == base.shape and pooled.dtype == np.float32
    correlation = np.corrcoef(pooled.ravel(), direction.ravel())[0, 1]
    assert correlation > 0.5
    # a darkening sequence (time reversed) must point the other way
    reversed_pooled = exact_rank_pooling(frames[::-1])
    assert np.corrcoef(reversed_pooled.ravel(), direction.ravel())[0, 1] < -0.25


def test_to_uint8_uses_one_global_range():
    image = np.array([[[-2.0, 0.0, 2.0]], [[1.0, -1.0, 0.5]]])
    out = to_uint8(image)
    assert out.dtype == np.uint8
    # channels are NOT stretched separately: channel 2 spans 0.5..2 and keeps its place in -2..2
    np.testing.assert_array_equal(out, [[[0, 128, 255]], [[191, 64, 159]]])


@pytest.mark.parametrize("value", [0.0, -7.5, 1e9])
def test_to_uint8_constant_is_mid_grey(value):
    out = to_uint8(np.full((4, 4, 3), value))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, 128)


@pytest.mark.parametrize(
    "n, k, expected",
    [
        (10, 4, [0, 3, 6, 9]),
        (6, 4, [0, 2, 3, 5]),
        (100, 16, np.rint(np.linspace(0, 99, 16)).astype(int)),
        (5, 5, [0, 1, 2, 3, 4]),
        (5, 16, [0, 1, 2, 3, 4]),
        (5, "all", [0, 1, 2, 3, 4]),
        (7, 1, [3]),
        (1, 16, [0]),
    ],
)
def test_sample_frames(n, k, expected):
    np.testing.assert_array_equal(sample_frames(n, k), expected)


@pytest.mark.parametrize("n", range(2, 40))
@pytest.mark.parametrize("k", [2, 3, 16])
def test_sample_frames_distinct_sorted_with_ends(n, k):
    picked = sample_frames(n, k)
    assert len(picked) == min(n, k)
    assert picked[0] == 0 and picked[-1] == n - 1
    assert np.all(np.diff(picked) > 0)


@pytest.mark.parametrize("n, k", [(0, 4), (5, 0), (5, "some")])
def test_sample_frames_rejects_bad_arguments(n, k):
    with pytest.raises(ValueError):
        sample_frames(n, k)


def test_common_support_is_inside_in_every_frame_then_eroded():
    from smile_vlm.dynamic import common_support

    inside = np.zeros((3, 2, 12, 12), dtype=bool)  # (T, V, H, W)
    inside[:, :, 2:10, 2:10] = True
    inside[1, 0, 2:10, 8:10] = False  # one frame of view 0 lacks two columns
    support = common_support(inside, erode_px=0)
    assert support.shape == (2, 12, 12)
    assert support[0].sum() == 8 * 6 and support[1].sum() == 8 * 8
    eroded = common_support(inside, erode_px=1)
    assert eroded[0].sum() == 6 * 4 and eroded[1].sum() == 6 * 6
    inside[2, 1, 5:7, 5:7] = False  # a hole (an open mouth) in one frame of view 1 stays supported
    assert common_support(inside, erode_px=1)[1].sum() == 6 * 6


def test_apply_support_sets_the_rest_to_background():
    from smile_vlm.dynamic import apply_support

    images = np.full((2, 4, 4, 3), 200, dtype=np.uint8)
    support = np.zeros((2, 4, 4), dtype=bool)
    support[:, 1:3, 1:3] = True
    masked = apply_support(images, support)
    assert masked.dtype == np.uint8 and masked.sum() == 2 * 4 * 3 * 200
    assert (masked[:, 0] == 0).all()
