from pathlib import Path

import numpy as np
import pytest

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.normalize import canonicalize, estimate_nose_tip
from smile_vlm.settings import complete
from ict_data import ICT_DIR



def grid_face(n=41, half_width=100.0):
    """A face-like height field in mm: a shallow dome looking toward +z with a nose bump at (0, 10)."""
    xs = np.linspace(-half_width, half_width, n)
    x, y = np.meshgrid(xs, xs)
    z = -0.004 * (x**2 + y**2) + 25.0 * np.exp(-((x**2 + (y - 10.0) ** 2) / (2 * 12.0**2)))
    vertices = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    ids = np.arange(n * n).reshape(n, n)
    a, b, c, d = ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel(), ids[1:, :-1].ravel(), ids[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return vertices, faces


def test_landmark_nose_tip_goes_to_origin_and_scale_is_one_over_radius():
    vertices, faces = grid_face()
    nose = np.array([5.0, -3.0, 2.0])
    mesh = Mesh(vertices, faces, landmarks={"nose_tip": nose, "chin": nose + [0.0, -45.0, 0.0]})
    out = canonicalize(mesh, complete("render", {"radius_mm": 50.0}))
    np.testing.assert_allclose(out.landmarks["nose_tip"], 0.0, atol=1e-6)
    np.testing.assert_allclose(out.landmarks["chin"], [0.0, -0.9, 0.0], atol=1e-6)
    # a vertex kept by the crop is moved and scaled exactly
    original = vertices[np.argmin(np.linalg.norm(vertices - nose, axis=1))]
    assert np.isclose(np.linalg.norm(out.vertices - (original - nose) / 50.0, axis=1).min(), 0.0, atol=1e-6)


def test_bosphorus_label_is_accepted_as_nose_tip():
    vertices, faces = grid_face()
    mesh = Mesh(vertices, faces, landmarks={"Nose tip": np.array([0.0, 0.0, -10.0])})
    out = canonicalize(mesh, complete("render", {}))
    np.testing.assert_allclose(out.landmarks["Nose tip"], 0.0, atol=1e-6)


def test_geometric_nose_tip_ignores_a_stray_point_in_front():
    vertices, faces = grid_face()
    true_tip = vertices[np.argmax(vertices[:, 2])]
    assert abs(true_tip[1] - 10.0) < 5.0  # the bump, not the dome centre
    # scanner clutter: a small triangle 400 mm in front of the face, off to the side
    clutter = np.array([[150.0, 150.0, 400.0], [151.0, 150.0, 400.0], [150.0, 151.0, 400.0]])
    all_vertices = np.concatenate([vertices, clutter])
    all_faces = np.concatenate([faces, [[len(vertices), len(vertices) + 1, len(vertices) + 2]]])
    np.testing.assert_allclose(estimate_nose_tip(all_vertices), true_tip)

    out = canonicalize(Mesh(all_vertices, all_faces), complete("render", {"radius_mm": 90.0}))
    assert out.n_vertices < len(all_vertices)
    assert np.linalg.norm(out.vertices, axis=1).max() <= 1.0 + 1e-6
    assert np.isclose(np.linalg.norm(out.vertices, axis=1).min(), 0.0, atol=1e-7)  # the tip itself
    assert out.vertices[:, 2].max() <= 1e-6  # nothing in front of the nose tip survives


def test_crop_drops_faces_with_any_vertex_outside_and_keeps_face_uv_consistent():
    # a strip of triangles along +x: triangle i has vertices at x = i, i + 1 (in mm)
    n = 10
    top = np.stack([np.arange(n + 1), np.zeros(n + 1), np.zeros(n + 1)], 1).astype(float)
    bottom = top + [0.0, -0.5, 0.0]
    vertices = np.concatenate([top, bottom])
    faces = np.array([[i, i + 1, n + 1 + i] for i in range(n)])
    uv = np.random.default_rng(0).uniform(size=(3 * n, 2))
    face_uv = np.arange(3 * n)[::-1].reshape(n, 3)  # per-corner UVs, not aligned with vertices
    mesh = Mesh(vertices, faces, uv=uv, face_uv=face_uv, landmarks={"nose_tip": np.zeros(3)})

    out = canonicalize(mesh, complete("render", {"radius_mm": 3.5}))
    # triangle i reaches x = i + 1, so i = 0, 1, 2 stay; triangle 3 goes although two of its
    # corners (x = 3 and the bottom one at 3.04 mm) are inside
    assert out.n_faces == 3
    np.testing.assert_allclose(out.vertices[out.faces] * 3.5, vertices[faces[:3]], atol=1e-6)
    np.testing.assert_allclose(out.uv[out.face_uv], uv[face_uv[:3]])
    assert len(out.uv) == 9 and out.n_vertices == 7  # unused vertices and UVs are dropped


def test_units_cm_and_explicit_scale():
    vertices, faces = grid_face()
    vertices = vertices / 10.0  # the same face in cm
    tip = vertices[np.argmax(vertices[:, 2])]
    out_cm = canonicalize(Mesh(vertices, faces), complete("render", {"units": "cm", "radius_mm": 90.0}))
    out_scale = canonicalize(Mesh(vertices, faces), complete("render", {"scale": 10.0, "radius_mm": 90.0}))
    np.testing.assert_allclose(out_cm.vertices, out_scale.vertices)
    corner = vertices[np.argmin(np.linalg.norm(vertices - [-3.0, -3.0, 0.0], axis=1))]  # ~5 cm from the tip
    expected = (corner - tip) * 10.0 / 90.0
    assert np.linalg.norm(out_cm.vertices - expected, axis=1).min() < 1e-6


def test_nothing_left_is_a_scan_error_naming_the_file():
    vertices, faces = grid_face()
    mesh = Mesh(vertices, faces, source=Path("scans/F0001.wrl"), landmarks={"nose_tip": np.array([0, 0, 900.0])})
    with pytest.raises(ScanError) as info:
        canonicalize(mesh, complete("render", {"radius_mm": 90.0}))
    assert info.value.path == str(Path("scans/F0001.wrl"))
    assert "90" in info.value.reason


def test_empty_and_broken_meshes_are_scan_errors():
    with pytest.raises(ScanError):
        canonicalize(Mesh(np.zeros((0, 3)), np.zeros((0, 3))), complete("render", {}))
    with pytest.raises(ScanError):
        canonicalize(Mesh(np.zeros((3, 3)), [[0, 1, 5]]), complete("render", {}))
    with pytest.raises(ScanError):
        canonicalize(Mesh([[0, 0, 0], [1, 0, np.nan], [0, 1, 0]], [[0, 1, 2]]), complete("render", {}))


def read_obj_geometry(path):
    """Vertices and fan-triangulated faces of an OBJ (enough for ICT-FaceKit; UVs ignored)."""
    vertices, faces = [], []
    with open(path) as handle:
        for line in handle:
            if line.startswith("v "):
                vertices.append([float(v) for v in line.split()[1:4]])
            elif line.startswith("f "):
                corners = [int(token.split("/")[0]) - 1 for token in line.split()[1:]]
                faces.extend([corners[0], corners[i], corners[i + 1]] for i in range(1, len(corners) - 1))
    return np.array(vertices), np.array(faces)


@pytest.mark.skipif(not (ICT_DIR / "generic_neutral_mesh.obj").exists(), reason="ICT-FaceKit data absent")
def test_ict_facekit_neutral_head():
    vertices, faces = read_obj_geometry(ICT_DIR / "generic_neutral_mesh.obj")
    assert vertices.shape == (26719, 3)
    out = canonicalize(Mesh(vertices, faces), complete("render", {"units": "cm", "radius_mm": 90.0}))
    # the nose tip is the frontmost vertex of the face sub-mesh (vertices 0..9408)
    face_tip = vertices[:9409][np.argmax(vertices[:9409, 2])]
    assert abs(face_tip[0]) < 0.1  # on the midline
    radii = np.linalg.norm(out.vertices, axis=1)
    assert radii.min() == pytest.approx(0.0, abs=1e-7)
    assert radii.max() <= 1.0 + 1e-6
    # 9 cm around the nose keeps the face but drops the back of the head (z down to -9.2 cm)
    assert out.vertices[:, 2].min() > -1.0 and out.vertices[:, 2].max() <= 1e-6
    kept_fraction = out.n_faces / len(faces)
    assert 0.2 < kept_fraction < 0.9
    np.testing.assert_allclose(estimate_nose_tip(vertices[np.unique(faces)]), face_tip)


def test_smooth_track_removes_jitter_and_keeps_drift():
    from smile_vlm.normalize import smooth_track

    drift = np.stack([np.arange(9.0), np.zeros(9), np.zeros(9)], axis=1)  # 1 mm per frame in x
    jitter = drift.copy()
    jitter[4, 1] += 5.0  # one frame's estimate jumps 5 mm
    smoothed = smooth_track(jitter, 5)
    assert np.allclose(smoothed[:, 1], 0.0)  # the jump is gone
    assert np.allclose(smoothed[2:7, 0], drift[2:7, 0])  # slow motion is kept
    assert np.array_equal(smooth_track(jitter, 1), jitter)
