"""Head motion inside synthetic 4D sequences (the synthetic head_motion setting)."""

from __future__ import annotations

import numpy as np
import pytest

from smile_vlm.readers import read_mesh
from smile_vlm.synth import generate
from smile_vlm.synth.layouts import DEFAULTS
from smile_vlm.synth.motion import HEAD_PIVOT_MM, sequence_poses

MOTION = DEFAULTS["head_motion"]
START, END = (1.5, -2.0, 0.7), (-3.0, 1.0, 2.5)


def _angles(poses) -> np.ndarray:
    return np.asarray(poses, dtype=np.float64)


def test_drift_is_the_straight_path_from_start_to_end_and_draws_nothing():
    rng = np.random.default_rng(5)
    poses, shifts = sequence_poses(9, rng, {**MOTION, "kind": "drift"}, START, END)
    direct = [tuple((1 - k / 8) * np.asarray(START) + (k / 8) * np.asarray(END)) for k in range(9)]
    assert poses == direct
    assert not shifts.any()
    assert rng.random() == np.random.default_rng(5).random()  # the rest of the sequence is unchanged
    held, _ = sequence_poses(4, rng, {**MOTION, "kind": "drift"}, START)
    assert held == [START] * 4


def test_the_default_head_motion_is_the_drift():
    assert MOTION["kind"] == "drift"


def test_drift_noise_adds_independent_noise_of_the_set_size_to_every_frame():
    motion = {**MOTION, "kind": "drift_noise", "noise_deg": 0.3}
    drift, _ = sequence_poses(4000, np.random.default_rng(1), {**motion, "kind": "drift"}, START, END)
    noisy, shifts = sequence_poses(4000, np.random.default_rng(1), motion, START, END)
    noise = _angles(noisy) - _angles(drift)
    assert noise.std(axis=0) == pytest.approx([0.3] * 3, rel=0.08)
    assert np.abs(noise.mean(axis=0)).max() < 0.03
    assert abs(np.corrcoef(noise[:-1, 0], noise[1:, 0])[0, 1]) < 0.1  # independent frame to frame
    assert not shifts.any()


@pytest.mark.parametrize("degrees,millimetres", [(4.0, 3.0), (1.0, 0.5)])
def test_jitter_moves_every_frame_independently_by_the_set_amplitude(degrees, millimetres):
    motion = {**MOTION, "kind": "jitter", "jitter_deg": degrees, "jitter_mm": millimetres}
    poses, shifts = sequence_poses(4000, np.random.default_rng(2), motion, START, END)
    offset = _angles(poses) - np.asarray(START)
    assert np.abs(offset[:, :2]).max() <= degrees and np.abs(offset[:, :2]).max() > 0.98 * degrees
    assert not offset[:, 2].any()  # yaw and pitch only; the roll stays at the start pose
    # uniform in +-A: frame-to-frame differences have a standard deviation of A * sqrt(2/3)
    step = np.diff(offset[:, :2], axis=0)
    assert step.std(axis=0) == pytest.approx([degrees * np.sqrt(2 / 3)] * 2, rel=0.06)
    norms = np.linalg.norm(shifts, axis=1)
    assert norms.max() <= millimetres + 1e-9 and norms.max() > 0.97 * millimetres
    assert abs(np.corrcoef(shifts[:-1, 0], shifts[1:, 0])[0, 1]) < 0.1


def test_unknown_head_motion_kind_is_refused():
    with pytest.raises(ValueError, match="head_motion kind 'shake'"):
        sequence_poses(3, np.random.default_rng(0), {**MOTION, "kind": "shake"}, START)


# ----------------------------------------------------------------------------- written sequences
SMALL = {"seed": 2, "resolution_4d": 16, "texture_size": 16, "noise_mm": 0.0,
         "subjects": {"bu4dfe": 1, "bp4d": 1, "4dme": 1}, "frames": {"bu4dfe": 4, "bp4d": 4},
         "micro_clips_per_subject": 1, "micro_frames_per_clip": 4}
SEQUENCE_FILES = {"bu4dfe": "F001/Angry/*.wrl", "bp4d": "Sequences_2D+3D/F001/T1/*.obj", "4dme": "mesh_micro/S01/ME01/*.obj"}


def _rigid_fit(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation R and shift c with b ~ a @ R.T + c (Kabsch), and the largest residual in mm."""
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1, 1, d]) @ u.T
    c = cb - ca @ r.T
    return r, c, float(np.linalg.norm(a @ r.T + c - b, axis=1).max())


@pytest.mark.parametrize("dataset", ["bu4dfe", "bp4d", "4dme"])
def test_every_4d_writer_moves_the_head_rigidly_as_set(tmp_path, dataset):
    """Same expression frames, other head motion: each jitter frame is a rigid motion of the drift
    frame, by at most the set amplitude (BP4D and 4DME hold their start pose under drift)."""
    frames = {}
    for kind in ("drift", "jitter"):
        root = tmp_path / kind
        generate(dataset, root, {**SMALL, "head_motion": {"kind": kind, "jitter_deg": 4.0, "jitter_mm": 3.0}})
        frames[kind] = [read_mesh(p).vertices for p in sorted(root.glob(SEQUENCE_FILES[dataset]))]
    assert len(frames["jitter"]) == len(frames["drift"]) >= 4
    angles, shifts = [], []
    for drift, jitter in zip(frames["drift"], frames["jitter"]):
        r, c, residual = _rigid_fit(drift, jitter)
        assert residual < 0.01  # the expression is untouched, only the head moved
        angles.append(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
        shifts.append(np.linalg.norm(c - HEAD_PIVOT_MM + HEAD_PIVOT_MM @ r.T))  # c = p - R p + t
    if dataset != "bu4dfe":  # a held start pose: the relative turn is the jitter offset itself
        assert max(angles) <= 4.0 * np.sqrt(2) + 0.1
    assert max(shifts) <= 3.0 + 0.01
    assert np.ptp(angles) > 0.2 and min(angles) > 0.0  # every frame moved, each its own way

