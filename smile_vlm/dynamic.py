"""Dynamic images: one image that summarises the temporal evolution of a rendered 4D sequence.

Approximate rank pooling follows Bilen et al., "Dynamic Image Networks for Action Recognition"
(CVPR 2016; the authors' ``vl_nnarpooltemporal.m``); exact rank pooling follows Fernando et al.,
"Rank Pooling for Action Recognition" (TPAMI 2017; the public ``rank_pooling.py``).
``common_support`` gives all frames of a sequence one image support, so that pooling sees
facial motion rather than each frame's crop edge.
"""

from __future__ import annotations

import numpy as np


def approximate_rank_pooling_weights(n_frames: int) -> np.ndarray:
    """alpha_t = 2(T - t + 1) - (T + 1)(H_T - H_{t-1}) for t = 1..T, with H the harmonic numbers.

    The weights sum to zero, so whatever is static in the sequence cancels out. A single frame
    gets weight 1 (as in the authors' code), i.e. its dynamic image is the frame itself.
    """
    if n_frames < 1:
        raise ValueError(f"rank pooling needs at least one frame, got {n_frames}")
    if n_frames == 1:
        return np.ones(1)
    t = np.arange(1, n_frames + 1, dtype=np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / t)])  # H_0 .. H_T
    return 2.0 * (n_frames - t + 1) - (n_frames + 1) * (harmonic[n_frames] - harmonic[:-1])


def approximate_rank_pooling(frames: np.ndarray) -> np.ndarray:
    """Weighted sum of the frames (T, ...) with the approximate rank pooling weights -> float32 (...)."""
    frames = np.asarray(frames)
    weights = approximate_rank_pooling_weights(frames.shape[0])
    # float64 accumulation: the weights are large and of both signs, so float32 would cancel badly
    return np.tensordot(weights, frames.astype(np.float64), axes=1).astype(np.float32)


def exact_rank_pooling(frames: np.ndarray, epsilon: float = 0.1, c: float = 1.0) -> np.ndarray:
    """Fernando et al.'s rank pooling: the linear SVR that best orders the smoothed frames in time.

    Steps (as in ``rank_pooling.py``): time-varying mean, signed square root, L2 normalisation of
    each time step, then a linear SVR regressing t = 1..T; its weights, in the frame shape, are the
    pooled image. About two orders of magnitude slower than the approximate form.
    """
    from sklearn.svm import LinearSVR

    frames = np.asarray(frames, dtype=np.float64)
    n_frames = frames.shape[0]
    features = frames.reshape(n_frames, -1)
    steps = np.arange(1, n_frames + 1, dtype=np.float64)
    smoothed = np.cumsum(features, axis=0) / steps[:, None]
    smoothed = np.sign(smoothed) * np.sqrt(np.abs(smoothed))
    norms = np.linalg.norm(smoothed, axis=1, keepdims=True)
    smoothed = smoothed / np.where(norms > 0, norms, 1.0)
    svr = LinearSVR(
        epsilon=epsilon,
        C=c,
        loss="squared_epsilon_insensitive",
        fit_intercept=False,
        dual=False,
        tol=1e-3,
    )
    svr.fit(smoothed, steps)
    return svr.coef_.reshape(frames.shape[1:]).astype(np.float32)


def common_support(inside: np.ndarray, erode_px: int = 1) -> np.ndarray:
    """One image support for all frames: (T, ..., H, W) bool -> (..., H, W) bool.

    The support is the region inside (the visible surface lies in the crop sphere) in EVERY
    frame, with its holes filled, less ``erode_px`` pixels at its edge. Each pixel near the
    support's edge is then surface in all frames or background in all frames, and rank pooling,
    whose weights sum to zero, cancels whatever does not change; a pixel that is surface in
    some frames only (the crop edge of a re-meshed scan, a jaw that leaves the sphere) would
    pool into a bright or dark edge that is not facial motion. Holes are filled because they
    are part of the face: a mouth that opens shows the head's interior or nothing, which is
    motion to keep (the renderer draws those pixels as background in the frames where they are
    not inside). The erosion takes off anti-aliased silhouette pixels, which mix surface and
    background in proportions that change from frame to frame.
    """
    from scipy import ndimage

    inside = np.asarray(inside, dtype=bool)
    every_frame = inside.all(axis=0)
    flat = every_frame.reshape(-1, *every_frame.shape[-2:])
    support = []
    for image in flat:
        image = ndimage.binary_fill_holes(image)
        support.append(ndimage.binary_erosion(image, iterations=erode_px) if erode_px > 0 else image)
    return np.stack(support).reshape(every_frame.shape)


def apply_support(images: np.ndarray, support: np.ndarray, background: int = 0) -> np.ndarray:
    """Images (..., H, W, C) with the pixels outside ``support`` (..., H, W) set to ``background``."""
    return np.where(support[..., None], images, np.asarray(background, dtype=images.dtype))


def to_uint8(dynamic_image: np.ndarray) -> np.ndarray:
    """Min-max to 0..255 with ONE min and max over all pixels and channels (Bilen's visualisation).

    Per-channel scaling would change the colours; a constant image (e.g. a static sequence) has
    no range to stretch and becomes mid-grey 128.
    """
    values = np.asarray(dynamic_image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.full(values.shape, 128, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def sample_frames(n_frames: int, k: int | str) -> np.ndarray:
    """Indices of k frames spread uniformly over 0..n-1, sorted, first and last included.

    ``k == "all"`` or ``k >= n`` keeps every frame; ``k == 1`` takes the middle frame.
    """
    if n_frames < 1:
        raise ValueError(f"cannot sample from {n_frames} frames")
    if isinstance(k, str):
        if k != "all":
            raise ValueError(f"frames must be an integer or 'all', got {k!r}")
        return np.arange(n_frames)
    k = int(k)
    if k < 1:
        raise ValueError(f"frames must be >= 1, got {k}")
    if k >= n_frames:
        return np.arange(n_frames)
    if k == 1:
        return np.array([(n_frames - 1) // 2])
    # spacing (n-1)/(k-1) > 1 when k < n, so the rounded positions are distinct
    return np.rint(np.linspace(0, n_frames - 1, k)).astype(np.int64)
