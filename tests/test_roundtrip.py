"""Generator -> files -> readers gives back what was generated, for every format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smile_vlm.readers.bnd import read_bnd
from smile_vlm.readers.bosphorus import bnt_to_mesh, read_bnt, read_lm2, read_lm3
from smile_vlm.readers.fourdme import read_annotations
from smile_vlm.readers.obj import read_obj
from smile_vlm.readers.vrml import read_vrml
from smile_vlm.synth import generate, writers
from smile_vlm.synth.expressions import EMOTIONS, PROTOTYPES
from smile_vlm.synth.face import FaceModel
from smile_vlm.synth.identity import sample_identity

COORD_TOLERANCE = 0.5 * 10.0 ** -writers.COORD_DECIMALS + 1e-5  # rounding plus float32
UV_TOLERANCE = 0.5 * 10.0 ** -writers.UV_DECIMALS + 1e-6

SMALL = {
    "seed": 5,
    "resolution": 30,
    "resolution_4d": 22,
    "subjects": {"bu3dfe": 2, "bu4dfe": 1, "bp4d": 2, "bosphorus": 2, "4dme": 2},
    "frames": {"bu4dfe": 3, "bp4d": 3},
    "micro_clips_per_subject": 2,
    "micro_frames_per_clip": 4,
    "texture_size": 40,
}


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return FaceModel(sample_identity(np.random.default_rng(2)), resolution=40)


@pytest.fixture(scope="module")
def frame(model):
    return model.deform(PROTOTYPES["surprise"], np.random.default_rng(0), (3.0, -2.0, 1.0), 0.1)


def test_vrml_round_trip(tmp_path, model, frame):
    path = tmp_path / "F0001_SU04WH_F3D.wrl"
    writers.write_image(tmp_path / "F0001_SU04WH_F3D.bmp", model.texture(32))
    writers.write_vrml(path, frame.vertices, model.polygons, model.uv, model.polygon_uv, "F0001_SU04WH_F3D.bmp")
    mesh = read_vrml(path)
    np.testing.assert_allclose(mesh.vertices, frame.vertices, atol=COORD_TOLERANCE)
    np.testing.assert_array_equal(mesh.faces, model.triangles)  # quads and pentagons fanned alike
    np.testing.assert_allclose(mesh.uv, model.uv, atol=UV_TOLERANCE)
    np.testing.assert_array_equal(mesh.face_uv, model.triangles_uv)
    assert mesh.texture == tmp_path / "F0001_SU04WH_F3D.bmp"


def test_obj_round_trip(tmp_path, model, frame):
    texture, uv_top = model.frontal_texture(48)
    uv = np.column_stack([uv_top[model.valid][:, 0], 1.0 - uv_top[model.valid][:, 1]])
    path = tmp_path / "0042.obj"
    writers.write_obj(path, frame.vertices, model.triangles, uv, model.triangles)
    mesh = read_obj(path)
    np.testing.assert_allclose(mesh.vertices, frame.vertices, atol=COORD_TOLERANCE)
    np.testing.assert_array_equal(mesh.faces, model.triangles)
    np.testing.assert_allclose(mesh.uv, uv, atol=UV_TOLERANCE)


def test_bnd_round_trip(tmp_path, model, frame):
    path = tmp_path / "000.bnd"
    writers.write_bnd(path, model.bu83, frame.vertices[model.bu83])
    indices, xyz = read_bnd(path)
    np.testing.assert_array_equal(indices, model.bu83)
    np.testing.assert_allclose(xyz, frame.vertices[model.bu83], atol=1e-5)


def test_bnt_and_landmark_round_trip(tmp_path, model, frame):
    texture, uv_top = model.frontal_texture(64)
    writers.write_bnt(tmp_path / "bs000_E_FEAR_0.bnt", frame.grid, model.valid, uv_top, "bs000_E_FEAR_0.png")
    writers.write_image(tmp_path / "bs000_E_FEAR_0.png", texture)
    scan = read_bnt(tmp_path / "bs000_E_FEAR_0.bnt")
    # the reader flips rows to image order (row 0 = top); the file stores the bottom row first
    np.testing.assert_array_equal(scan.valid, model.valid[::-1])
    np.testing.assert_array_equal(scan.xyz[scan.valid], frame.grid[::-1][model.valid[::-1]])
    np.testing.assert_array_equal(scan.uv, uv_top[::-1])
    assert scan.texture_name == "bs000_E_FEAR_0.png" and scan.zmin == -1.0e9
    mesh = bnt_to_mesh(scan, tmp_path / "bs000_E_FEAR_0.bnt")
    assert mesh.n_vertices == model.n_vertices
    assert sorted(map(tuple, np.round(mesh.vertices, 3))) == sorted(map(tuple, np.round(frame.vertices.astype(np.float32), 3)))

    points = {label: frame.vertices[v] for label, v in model.bosphorus.items()}
    pixels = {label: np.array([3.0 + k, 200.5 - k]) for k, label in enumerate(model.bosphorus)}
    writers.write_lm3(tmp_path / "bs000_E_FEAR_0.lm3", points)
    writers.write_lm2(tmp_path / "bs000_E_FEAR_0.lm2", pixels)
    lm3, lm2 = read_lm3(tmp_path / "bs000_E_FEAR_0.lm3"), read_lm2(tmp_path / "bs000_E_FEAR_0.lm2")
    assert list(lm3) == list(points) and len(lm3) == 22
    for label in points:
        np.testing.assert_allclose(lm3[label], points[label], atol=5e-4)
        np.testing.assert_allclose(lm2[label], pixels[label], atol=5e-4)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    return {name: root / name for name in ("bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme")
            if generate(name, root / name, SMALL)}


@pytest.mark.parametrize("name", ["bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme"])
def test_index_finds_every_generated_sample(datasets, name):
    from smile_vlm.index import index_dataset

    root = datasets[name]
    summary = json.loads((root / "SYNTHETIC.json").read_text())
    manifest, rejects, skipped = index_dataset(name, root, {"validate": "full"})
    assert rejects.empty, rejects.to_dict("records")
    # what the generator writes and the index does not use: its record, Bosphorus 2D landmarks, the
    # viewer (BP4D's AU codes are read: test_aucoding.py)
    unused = {"record of the synthetic generator, not a scan", "2D landmarks (.lm2): not used",
              "the bundled VRML viewer, not a subject"}
    assert set(skipped["reason"]) <= unused, skipped.to_dict("records")
    frames = manifest.groupby("sample_id").size().to_dict()
    assert frames == {s["sample_id"]: s["n_frames"] for s in summary["samples"]}
    labels = manifest.drop_duplicates("sample_id").set_index("sample_id")["labels"].to_dict()
    assert labels == {s["sample_id"]: s["labels"] for s in summary["samples"]}
    assert sorted(manifest["subject"].unique()) == sorted(summary["subjects"])
    if name == "bu3dfe":
        intensity = manifest.set_index("sample_id")["intensity"].to_dict()
        assert intensity == {s["sample_id"]: s["intensity"] for s in summary["samples"]}


def test_generated_bu3dfe_landmarks_sit_on_their_mesh_vertices(datasets):
    root = datasets["bu3dfe"]
    for wrl in sorted(root.glob("F0001/*_F3D.wrl"))[:3]:
        mesh = read_vrml(wrl)
        indices, xyz = read_bnd(wrl.with_suffix(".bnd"))
        np.testing.assert_allclose(mesh.vertices[indices], xyz, atol=COORD_TOLERANCE)
        assert mesh.texture is not None and mesh.texture.name == wrl.stem + ".bmp"


def test_4dme_annotations_round_trip(datasets):
    root = datasets["4dme"]
    summary = json.loads((root / "SYNTHETIC.json").read_text())
    table = read_annotations(root / "4DME_Labelling_Micro_release v1.xlsx")
    assert [f"{r.subject}_{r.clip}" for r in table.itertuples()] == [s["sample_id"] for s in summary["samples"]]
    assert table["labels"].tolist() == [s["labels"] for s in summary["samples"]]
    assert table["onset"].tolist() == [s["onset"] for s in summary["samples"]]
    assert table["offset"].tolist() == [s["offset"] for s in summary["samples"]]
    assert table["apex"].tolist() == [s["apex"] for s in summary["samples"]]


def test_every_emotion_has_a_distinct_face(model):
    rest = model.rest[model.valid]
    shapes = [model.deform(PROTOTYPES[e]).vertices - rest for e in EMOTIONS]
    for a in range(len(shapes)):
        for b in range(a + 1, len(shapes)):
            assert np.abs(shapes[a] - shapes[b]).max() > 3.0
