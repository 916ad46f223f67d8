"""How strongly an expression shows over the frames of a sequence."""

from __future__ import annotations

import numpy as np

def temporal_profile(n_frames: int, rng: np.random.Generator, style: str = "posed") -> np.ndarray:
    """Expression strength per frame in [0, 1].

    posed: neutral - onset - apex - offset - neutral with the apex in the middle (BU-4DFE);
    spontaneous: the same envelope with a slower, wobbling apex (BP4D tasks);
    micro: a short rise from onset to apex and a partial fall to the offset frame (4DME).
    """
    t = np.linspace(0.0, 1.0, n_frames)
    if style == "micro":
        apex = rng.uniform(0.35, 0.6)
        rise = np.clip(t / apex, 0, 1)
        fall = np.clip((1 - t) / (1 - apex), 0, 1)
        return np.where(t <= apex, _smoothstep(rise), 0.15 + 0.85 * _smoothstep(fall))
    start, peak_on = np.sort(rng.uniform([0.05, 0.3], [0.2, 0.45]))
    peak_off, end = np.sort(rng.uniform([0.55, 0.8], [0.7, 0.95]))
    onset = _smoothstep(np.clip((t - start) / (peak_on - start), 0, 1))
    offset = _smoothstep(np.clip((end - t) / (end - peak_off), 0, 1))
    profile = np.minimum(onset, offset)
    if style == "spontaneous":
        wobble = 1.0 + 0.15 * np.sin(2 * np.pi * (rng.uniform(1.5, 3.0) * t + rng.uniform()))
        profile = np.clip(profile * wobble, 0, 1)
    return profile


def _smoothstep(s: np.ndarray) -> np.ndarray:
    return s * s * (3 - 2 * s)
