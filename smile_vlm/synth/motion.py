"""Head pose of a scan and head motion inside a 4D sequence.

A pose is (yaw, pitch, roll) in degrees about a pivot near the centre of the head, plus an
optional translation in millimetres. Every 4D writer takes its frames' poses from
``sequence_poses`` with the ``head_motion`` setting, so BU-4DFE, BP4D and 4DME move the same way:

- ``drift``: the head moves linearly from the sequence's start pose to its end pose (the
  dataset's writer decides whether the end differs from the start), no noise;
- ``drift_noise``: that drift plus independent normal noise of ``noise_deg`` on each angle of
  every frame;
- ``jitter``: the start pose held, plus an independent yaw and pitch uniform in
  ±``jitter_deg`` and a translation uniform in a ball of radius ``jitter_mm`` for every frame.
"""

from __future__ import annotations

import numpy as np

HEAD_MOTIONS = ("drift", "drift_noise", "jitter")

# Rotations turn the head about roughly the centre of the skull, not the nose tip at the origin.
HEAD_PIVOT_MM = np.array([0.0, 0.0, -90.0])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation of a head pose in degrees: yaw about y, then pitch about x, then roll about z."""
    a, b, c = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ rx @ ry


def apply_pose(points: np.ndarray, pose_deg, translation_mm=None) -> np.ndarray:
    """``points`` (..., 3) turned by ``pose_deg`` about the head pivot, then shifted."""
    if any(pose_deg):
        points = (points - HEAD_PIVOT_MM) @ rotation(*pose_deg).T + HEAD_PIVOT_MM
    if translation_mm is not None and np.any(translation_mm):
        points = points + np.asarray(translation_mm, dtype=np.float64)
    return points


def random_pose(rng: np.random.Generator, sigma_deg: float) -> tuple[float, float, float]:
    """A scan's head pose: each angle normal with ``sigma_deg``, clipped at three sigma."""
    return tuple(float(v) for v in np.clip(rng.normal(0.0, sigma_deg, 3), -3 * sigma_deg, 3 * sigma_deg))


def sequence_poses(n_frames: int, rng: np.random.Generator, motion: dict, start, end=None) -> tuple[list, np.ndarray]:
    """Per-frame head poses [(yaw, pitch, roll)] and translations (n, 3) mm of one sequence.

    ``start`` and ``end`` are the sequence's base poses (``end`` None: the head holds ``start``);
    ``motion`` is the ``head_motion`` setting. ``drift`` draws nothing from ``rng``; the other
    kinds draw their per-frame motion from it, all frames at once.
    """
    kind = motion["kind"]
    if kind not in HEAD_MOTIONS:
        raise ValueError(f"unknown head_motion kind {kind!r}; expected one of {', '.join(HEAD_MOTIONS)}")
    start = np.asarray(start, dtype=np.float64)
    translations = np.zeros((n_frames, 3))
    if kind == "jitter":
        amplitude = float(motion["jitter_deg"])
        poses = np.repeat(start[None], n_frames, axis=0)
        poses[:, :2] += rng.uniform(-amplitude, amplitude, (n_frames, 2))
        translations = _uniform_in_ball(rng, n_frames, float(motion["jitter_mm"]))
        return [tuple(p) for p in poses], translations
    if end is None:
        poses = [tuple(start)] * n_frames
    else:
        end = np.asarray(end, dtype=np.float64)
        poses = [tuple((1 - t) * start + t * end) for t in (k / max(1, n_frames - 1) for k in range(n_frames))]
    if kind == "drift_noise":
        noise = rng.normal(0.0, float(motion["noise_deg"]), (n_frames, 3))
        poses = [tuple(np.asarray(p) + d) for p, d in zip(poses, noise)]
    return poses, translations


def _uniform_in_ball(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    direction = rng.normal(size=(n, 3))
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    return direction * radius * rng.uniform(0.0, 1.0, (n, 1)) ** (1.0 / 3.0)
