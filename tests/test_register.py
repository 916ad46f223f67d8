"""Rigid registration of 4D frames: a known head motion is recovered, an expression is not taken
for one, and input that admits no rigid fit is refused with the file's name.

Frames are the procedural face (no ICT data needed), moved about the generator's head centre.
"""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.normalize import estimate_nose_tip, nose_tip
from smile_vlm.register import (APEX_RADIUS_MM, Rigid, SequenceRegistration, kabsch, mean_pose, nose_apex,
                                rotation_from_vector)
from smile_vlm.render import render_shard
from smile_vlm.settings import complete
from smile_vlm.synth import writers
from smile_vlm.synth.face import FaceModel, sample_identity

PIVOT = np.array([0.0, 0.0, -90.0])
SIZE, FRAMES = 64, 8


@pytest.fixture(scope="module")
def face():
    return FaceModel(sample_identity(np.random.default_rng(3)), resolution=64)


def head_motion(yaw_deg, pitch_deg, shift) -> Rigid:
    turn = rotation_from_vector(np.radians([0.0, yaw_deg, 0.0])) @ rotation_from_vector(np.radians([pitch_deg, 0, 0]))
    return Rigid(turn, PIVOT - turn @ PIVOT + np.asarray(shift, dtype=np.float64))


def frame_mesh(face, au_weights, motion: Rigid | None = None, seed=0, name="frame.wrl") -> Mesh:
    """A noisy scan of the face, moved by ``motion``, with its noise-free nose tip as a landmark
    (the geometric estimate jumps between vertices; here only registration should differ)."""
    vertices = face.deform(au_weights).vertices
    tip = vertices[face.nose_tip]
    vertices = vertices + np.random.default_rng(seed).normal(0.0, 0.05, vertices.shape)  # scanner noise
    if motion is not None:
        vertices, tip = motion.apply(vertices), motion.apply(tip)
    return Mesh(vertices, face.triangles, source=name, landmarks={"nose_tip": tip})


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a @ b.T) - 1.0) / 2.0, -1.0, 1.0))))


SMILE = {6: 0.8, 12: 0.8, 25: 0.3}
MOTION = dict(yaw_deg=3.0, pitch_deg=2.0, shift=(1.0, -2.0, 1.5))


def test_kabsch_and_mean_pose_are_exact_on_exact_data():
    rng = np.random.default_rng(0)
    points = rng.normal(0, 30, (12, 3))
    motion = head_motion(**MOTION)
    fitted = kabsch(points, motion.apply(points))
    assert angle_between(fitted.rotation, motion.rotation) < 1e-6
    np.testing.assert_allclose(fitted.translation, motion.translation, atol=1e-6)
    np.testing.assert_allclose(motion.then(motion.inverse()).apply(points), points, atol=1e-9)
    turns = [Rigid(rotation_from_vector(np.radians([0, angle, 0])), np.array([angle, 0, 0])) for angle in (2, -2)]
    mean = mean_pose(turns)
    assert mean.angle_deg < 1e-6 and np.abs(mean.translation).max() < 1e-6


def test_icp_recovers_a_known_head_motion(face):
    registration = SequenceRegistration("icp", 1.0, 90.0)
    reference = frame_mesh(face, SMILE, seed=1)
    assert registration.fit(reference, nose_tip(reference)).angle_deg == 0.0
    motion = head_motion(**MOTION)
    moved = frame_mesh(face, SMILE, motion, seed=2)
    fitted = registration.fit(moved, nose_tip(moved))
    # the fit undoes the motion: within 0.5 degrees, and the face within 0.5 mm where it was
    assert angle_between(fitted.rotation @ motion.rotation, np.eye(3)) < 0.5
    assert np.abs(fitted.apply(moved.vertices) - reference.vertices).mean() < 0.5
    # the same frame, not moved, stays where it is
    still = frame_mesh(face, SMILE, seed=3)
    assert registration.fit(still, nose_tip(still)).angle_deg < 0.1


BROWS_LOWERED = {4: 1.0, 7: 1.0, 5: 0.6}  # brows lowered and drawn together, lids tightened
BROWS_RAISED = {1: 1.0, 2: 1.0, 5: 1.0}


@pytest.mark.parametrize("expression", [BROWS_LOWERED, BROWS_RAISED], ids=["brows_lowered", "brows_raised"])
def test_icp_recovers_a_head_motion_under_a_strong_brow_expression(face, expression):
    """The reference is neutral; the frame moves its brows and lids as far as the model goes and
    turns: the fit must follow the head, not the brows, from whichever side it starts."""
    registration = SequenceRegistration("icp", 1.0, 90.0)
    reference = frame_mesh(face, {}, seed=1)
    registration.fit(reference, nose_tip(reference))
    nose = np.linalg.norm(reference.vertices - reference.landmarks["nose_tip"], axis=1) < 15.0
    for motion in (head_motion(**MOTION), head_motion(yaw_deg=-4.0, pitch_deg=-4.0, shift=(-3.0, 3.0, -3.0)),
                   head_motion(yaw_deg=4.0, pitch_deg=-4.0, shift=(3.0, 3.0, 0.0))):
        moved = frame_mesh(face, expression, motion, seed=2)
        fitted = registration.fit(moved, nose_tip(moved))
        assert angle_between(fitted.rotation @ motion.rotation, np.eye(3)) < 0.5
        # the nose, which these expressions leave where it was, is put back within 0.5 mm
        assert np.abs(fitted.apply(moved.vertices) - reference.vertices)[nose].mean() < 0.5


def test_the_nose_apex_moves_smoothly_with_the_pose(face):
    """As the head turns by quarter degrees, the most forward vertex jumps to the next vertex (by
    millimetres); the quadric's top moves along the nose by about a tenth of a millimetre."""
    mesh = frame_mesh(face, {})
    tips, apexes = [], []
    for yaw in np.linspace(-4.0, 4.0, 33):
        turned = head_motion(yaw_deg=yaw, pitch_deg=yaw / 2, shift=(0.0, 0.0, 0.0))
        vertices = turned.apply(mesh.vertices)
        tip = estimate_nose_tip(vertices)
        tips.append(turned.inverse().apply(tip))  # on the face, before it turned
        apexes.append(turned.inverse().apply(nose_apex(vertices, tip, APEX_RADIUS_MM)))
    steps = [np.linalg.norm(np.diff(points, axis=0), axis=1).max() for points in (tips, apexes)]
    assert steps[1] < 0.2 < 1.0 < steps[0]


def write_landmarks(path, face, mesh: Mesh) -> str:
    writers.write_bnd(path, face.bu83, mesh.vertices[face.bu83])
    return str(path)


def test_landmarks_recover_a_known_head_motion(tmp_path, face):
    calls = []

    def read(path):
        calls.append(path)
        from smile_vlm.register import read_stable_landmarks
        return read_stable_landmarks(path)

    registration = SequenceRegistration("landmarks", 1.0, 90.0, read_landmarks=read)
    reference = frame_mesh(face, SMILE, seed=1)
    registration.fit(reference, nose_tip(reference), write_landmarks(tmp_path / "0.bnd", face, reference))
    motion = head_motion(**MOTION)
    moved = frame_mesh(face, SMILE, motion, seed=2)
    fitted = registration.fit(moved, nose_tip(moved), write_landmarks(tmp_path / "1.bnd", face, moved))
    assert len(calls) == 2
    assert angle_between(fitted.rotation @ motion.rotation, np.eye(3)) < 0.5
    assert np.abs(fitted.apply(moved.vertices) - reference.vertices).mean() < 0.5


def plate(name: str) -> Mesh:
    """A flat plate: any turn about its normal or shift along it fits as well as none."""
    x, y = np.meshgrid(np.linspace(-80, 80, 40), np.linspace(-80, 80, 40))
    vertices = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)])
    index = np.arange(x.size).reshape(x.shape)
    faces = np.concatenate([np.stack([index[:-1, :-1], index[:-1, 1:], index[1:, 1:]], -1).reshape(-1, 3),
                            np.stack([index[:-1, :-1], index[1:, 1:], index[1:, :-1]], -1).reshape(-1, 3)])
    return Mesh(vertices, faces, source=name)


def test_auto_takes_the_mesh_and_the_landmarks_where_the_mesh_admits_no_fit(tmp_path, face):
    reference, motion = frame_mesh(face, SMILE, seed=1), head_motion(**MOTION)
    moved = frame_mesh(face, SMILE, motion, seed=2)
    paths = [write_landmarks(tmp_path / f"{t}.bnd", face, mesh) for t, mesh in enumerate((reference, moved))]
    mesh_fit = SequenceRegistration("icp", 1.0, 90.0)
    mesh_fit.fit(reference, nose_tip(reference))
    auto = SequenceRegistration("auto", 1.0, 90.0, read_landmarks=lambda path: pytest.fail("read " + path))
    auto.fit(reference, nose_tip(reference), paths[0])
    # a face: the mesh's fit, the landmarks unread
    fitted = auto.fit(moved, nose_tip(moved), paths[1])
    np.testing.assert_array_equal(fitted.rotation, mesh_fit.fit(moved, nose_tip(moved)).rotation)
    # a featureless mesh: the landmarks' fit
    auto = SequenceRegistration("auto", 1.0, 90.0)
    auto.fit(plate("0.obj"), np.zeros(3), paths[0])
    fitted = auto.fit(plate("1.obj"), np.zeros(3), paths[1])
    assert angle_between(fitted.rotation @ motion.rotation, np.eye(3)) < 0.5


def test_landmarks_mode_refuses_a_frame_without_landmarks(face):
    registration = SequenceRegistration("landmarks", 1.0, 90.0)
    mesh = frame_mesh(face, {}, name="S1/Happy/000.wrl")
    with pytest.raises(ScanError, match="S1/Happy/000.wrl: registration: landmarks needs a landmark file"):
        registration.fit(mesh, nose_tip(mesh), "")


def test_degenerate_input_is_refused_with_the_file_name(tmp_path, face):
    registration = SequenceRegistration("icp", 1.0, 90.0)
    registration.fit(plate("plate0.obj"), np.zeros(3))
    with pytest.raises(ScanError, match="plate1.obj: .*featureless"):
        registration.fit(plate("plate1.obj"), np.zeros(3))

    # a frame with nothing in its upper face
    registration = SequenceRegistration("icp", 1.0, 90.0)
    reference = frame_mesh(face, {})
    registration.fit(reference, nose_tip(reference))
    chin = Mesh(reference.vertices[:3], np.array([[0, 1, 2]]), source="chin.obj")
    with pytest.raises(ScanError, match="chin.obj: 0 points in the upper face"):
        registration.fit(chin, reference.vertices[0] + [0, 300.0, 0])

    # landmarks all on one line
    line = tmp_path / "line.bnd"
    writers.write_bnd(line, np.arange(83), np.outer(np.arange(83), [1.0, 0.5, 0.0]))
    registration = SequenceRegistration("landmarks", 1.0, 90.0)
    registration.fit(reference, nose_tip(reference), str(line))
    with pytest.raises(ScanError, match="line.bnd: landmarks are collinear"):
        registration.fit(reference, nose_tip(reference), str(line))


# ---------------------------------------------------------------- through the render job
def manifest_row(frame):
    return {
        "dataset": "toy", "sample_id": "seq", "subject": "S", "sequence": "seq", "frame": frame,
        "label": "surprise", "labels": "surprise", "intensity": -1, "mesh_path": f"seq/{frame}",
        "texture_path": "", "landmark_path": "", "task": "", "sex": "", "race": "", "onset": "",
        "apex": "", "offset": "", "aus": "",
    }


def dynamic_image(tmp_path, meshes, registration, name, **extra) -> np.ndarray:
    pd.DataFrame([manifest_row(t) for t in range(len(meshes))]).to_csv(tmp_path / "m.csv", index=False)
    by_path = {f"seq/{t}": mesh for t, mesh in enumerate(meshes)}
    settings = {"mode": "shaded", "size": SIZE, "frames": "all", "registration": registration}
    render_shard(tmp_path / "m.csv", "toy", "S", tmp_path / name, complete("render", settings),
                 mesh_reader=lambda path: Mesh(by_path[path].vertices, by_path[path].faces, source=path,
                                                 landmarks=dict(by_path[path].landmarks)), **extra)
    assert pd.read_csv(tmp_path / name / "rejects.csv").empty
    return np.stack([np.asarray(Image.open(tmp_path / name / f"seq_v{view}.png"), dtype=np.float64)
                     for view in range(3)])


def correlation(a, b) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def surprise_frames(face, motions=None):
    """Brows up, jaw down, frame by frame; the same scanner noise whatever the head does."""
    weights = [{1: s, 2: s, 5: s, 26: s} for s in np.sin(np.linspace(0, np.pi, FRAMES))]
    motions = motions or [None] * FRAMES
    return [frame_mesh(face, w, m, seed=t, name=f"seq/{t}") for t, (w, m) in enumerate(zip(weights, motions))]


def test_registration_keeps_a_sequence_without_head_motion(tmp_path, face):
    frames = surprise_frames(face)
    off = dynamic_image(tmp_path, frames, "none", "off")
    on = dynamic_image(tmp_path, frames, "icp", "on")
    assert correlation(on, off) >= 0.99


def test_registration_takes_head_motion_out_of_the_dynamic_image(tmp_path, face):
    rng = np.random.default_rng(7)
    motions = [head_motion(*rng.uniform(-4, 4, 2), rng.uniform(-3, 3, 3)) for _ in range(FRAMES)]
    still = dynamic_image(tmp_path, surprise_frames(face), "icp", "still")
    moving = surprise_frames(face, motions)
    registered = dynamic_image(tmp_path, moving, "icp", "moving")
    unregistered = dynamic_image(tmp_path, moving, "none", "moving_none")
    still_unregistered = dynamic_image(tmp_path, surprise_frames(face), "none", "still_none")
    assert correlation(registered, still) >= 0.9
    assert correlation(unregistered, still_unregistered) < 0.8  # what registration removes
    # a frame read again (not kept between the passes) is moved exactly as a kept one
    again = dynamic_image(tmp_path, moving, "icp", "again", keep_parsed_mb=0)
    np.testing.assert_array_equal(again, registered)


def test_frames_read_again_share_the_centre_of_kept_frames_without_a_nose_landmark(tmp_path, face):
    """The centre of frames without a nose-tip landmark comes from their nose patches in the mean
    pose, whether the frame is kept between the passes or read again."""
    rng = np.random.default_rng(8)
    motions = [head_motion(*rng.uniform(-4, 4, 2), rng.uniform(-3, 3, 3)) for _ in range(FRAMES)]
    frames = surprise_frames(face, motions)
    for frame in frames:
        frame.landmarks.clear()
    kept = dynamic_image(tmp_path, frames, "icp", "kept")
    again = dynamic_image(tmp_path, frames, "icp", "again", keep_parsed_mb=0)
    np.testing.assert_array_equal(again, kept)
