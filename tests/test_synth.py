"""The synthetic generator: determinism, counts, and expressions that move the right regions."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smile_vlm.synth import expressions, generate, profiles
from smile_vlm.synth.expressions import EMOTIONS, PROTOTYPES
from smile_vlm.synth.face import FaceModel
from smile_vlm.synth.identity import sample_identity
from smile_vlm.synth.layouts import BP4D_TASKS, DEFAULTS, bp4d_frame_format
from ict_data import ICT_DIR

SMALL = {
    "seed": 3,
    "resolution": 36,
    "resolution_4d": 24,
    "subjects": {"bu3dfe": 2, "bu4dfe": 2, "bp4d": 3, "bosphorus": 3, "4dme": 2},
    "frames": {"bu4dfe": 5, "bp4d": 4},
    "micro_clips_per_subject": 3,
    "micro_frames_per_clip": 5,
    "texture_size": 48,
}


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return FaceModel(sample_identity(np.random.default_rng(11)), resolution=DEFAULTS["resolution"])


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("synth")
    return {name: (root / name, generate(name, root / name, SMALL)) for name in ("bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme")}


def _displacement(model: FaceModel, expression: str, scale: float = 1.0) -> np.ndarray:
    weights = {au: w * scale for au, w in PROTOTYPES[expression].items()}
    return model.deform(weights).vertices - model.rest[model.valid]


# ----------------------------------------------------------------------------- face model
def test_rest_face_is_a_scan_sized_face_looking_toward_plus_z(model):
    rest = model.rest[model.valid]
    width = rest[:, 0].max() - rest[:, 0].min()
    assert 135 <= width <= 165
    assert rest[model.nose_tip, 2] == pytest.approx(5.0)  # the nose tip is the highest point
    assert abs(rest[model.nose_tip, 0]) < 3 and abs(rest[model.nose_tip, 1]) < 3
    assert 3500 <= model.n_vertices <= 6000


def test_happiness_raises_and_widens_the_mouth_corners(model):
    move = _displacement(model, "happiness")
    left, right = model.bu83[48], model.bu83[54]  # rows 49 and 55 are the mouth corners
    assert move[left, 1] > 5 and move[right, 1] > 5
    assert move[left, 0] < -2 and move[right, 0] > 2  # corners pulled outward


def test_surprise_drops_the_jaw_and_raises_the_brows(model):
    move = _displacement(model, "surprise")
    chin = model.bu83[75]  # row 76 is the chin
    assert move[chin, 1] < -8
    brows = model.bu83[16:36]
    assert move[brows, 1].mean() > 4


def test_anger_lowers_the_brows_and_sadness_lowers_the_mouth_corners(model):
    assert _displacement(model, "anger")[model.bu83[16:36], 1].mean() < -2
    sad = _displacement(model, "sadness")
    assert sad[model.bu83[48], 1] < -4 and sad[model.bu83[54], 1] < -4


@pytest.mark.parametrize("expression", EMOTIONS)
def test_every_apex_differs_from_neutral_by_several_millimetres(model, expression):
    assert np.linalg.norm(_displacement(model, expression), axis=1).max() > 5.0


def test_intensity_four_moves_more_than_intensity_one(model):
    for expression in EMOTIONS:
        low = np.linalg.norm(_displacement(model, expression, expressions.INTENSITY_SCALE[1]), axis=1).max()
        high = np.linalg.norm(_displacement(model, expression, expressions.INTENSITY_SCALE[4]), axis=1).max()
        assert high > 2.0 * low


def test_micro_expressions_stay_small(model):
    for aus in expressions.MICRO_TEMPLATES:
        frame = model.deform({au: 0.35 for au in aus})  # the largest micro apex the layout draws
        assert np.linalg.norm(frame.vertices - model.rest[model.valid], axis=1).max() < 4.0


def test_micro_labels_follow_the_au_rules():
    assert expressions.micro_labels((6, 12)) == ["positive"]
    assert expressions.micro_labels((1, 2, 4)) == ["negative", "surprise"]
    assert expressions.micro_labels((12, 17)) == ["positive", "repression"]
    assert expressions.micro_labels((45,)) == ["others"]


def test_topology_mixes_polygons_and_uses_every_vertex(model):
    sizes = {len(p) for p in model.polygons}
    assert sizes == {3, 4, 5}
    used = np.unique(np.concatenate(model.polygons))
    assert np.array_equal(used, np.arange(model.n_vertices))
    assert len(model.triangles) == sum(len(p) - 2 for p in model.polygons)
    assert len(model.uv) > model.n_vertices  # seam vertices carry two UVs, as in BU-3DFE
    assert [len(p) for p in model.polygon_uv] == [len(p) for p in model.polygons]


def test_triangles_face_plus_z(model):
    v = model.rest[model.valid]
    a, b, c = (v[model.triangles[:, k]] for k in range(3))
    normal_z = np.cross(b - a, c - a)[:, 2]
    assert (normal_z > 0).mean() > 0.97  # counter-clockwise seen from the camera


def test_temporal_profiles_start_and_end_near_neutral():
    rng = np.random.default_rng(0)
    posed = profiles.temporal_profile(30, rng, "posed")
    assert posed[0] == 0 and posed[-1] == 0 and posed.max() == pytest.approx(1.0, abs=1e-3)
    assert 8 <= int(np.argmax(posed)) <= 22
    micro = profiles.temporal_profile(10, rng, "micro")
    assert micro[0] == 0 and micro.max() == pytest.approx(1.0, abs=1e-3) and micro[-1] <= 0.2


# ----------------------------------------------------------------------------- layouts
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    settings = {**SMALL, "subjects": {"bu3dfe": 1, "4dme": 1}}
    for name in ("bu3dfe", "4dme"):
        generate(name, tmp_path / "a" / name, settings)
        generate(name, tmp_path / "b" / name, settings)
        generate(name, tmp_path / "c" / name, {**settings, "seed": 4})
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 50
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    wrl = "bu3dfe/F0001"
    a_wrl = sorted((tmp_path / "a" / wrl).glob("*.wrl"))[0]
    c_wrl = (tmp_path / "c" / wrl / a_wrl.name)
    other = c_wrl.read_bytes() if c_wrl.exists() else sorted((tmp_path / "c" / wrl).glob("*.wrl"))[0].read_bytes()
    assert a_wrl.read_bytes() != other


def test_subjects_written_by_two_processes_are_the_same_bytes(tmp_path):
    settings = {**SMALL, "subjects": {"bu4dfe": 3, "4dme": 2}}
    for name in ("bu4dfe", "4dme"):
        one = generate(name, tmp_path / "one" / name, settings)
        two = generate(name, tmp_path / "two" / name, settings, workers=2)
        assert one == two and len(one["subjects"]) > 1
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert any(f.suffix == ".xlsx" for f in files) and any(f.name == "readme.txt" for f in files)
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_bu3dfe_has_25_scans_per_subject_with_all_three_files(generated):
    root, summary = generated["bu3dfe"]
    assert summary["subjects"] == ["F0001", "M0001"]
    assert len(summary["samples"]) == 2 * 25
    for sample in summary["samples"]:
        for kind in ("wrl", "bmp", "bnd"):
            assert (root / sample["subject"] / f"{sample['sample_id']}_F3D.{kind}").is_file()
    levels = pd.DataFrame(summary["samples"]).groupby("label")["intensity"].apply(sorted)
    assert levels["neutral"] == [0, 0] and levels["happiness"] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert json.loads((root / "SYNTHETIC.json").read_text())["samples"] == summary["samples"]


def test_bu4dfe_sequences_landmarks_and_viewer_folder(generated):
    root, summary = generated["bu4dfe"]
    assert len(summary["samples"]) == 2 * 6
    for sample in summary["samples"]:
        subject, folder = sample["sample_id"].split("_")
        wrl = sorted(p.name for p in (root / subject / folder).glob("*.wrl"))
        assert wrl == [f"{k:03d}.wrl" for k in range(sample["n_frames"])]
        bnd = sorted(p.name for p in (root / "BU4DFE_BND_V1.1" / subject / folder).glob("*.bnd"))
        assert bnd == [f"{k:03d}.bnd" for k in range(sample["n_frames"])]
        assert (root / subject / folder / "000.jpg").is_file()
    assert (root / "BU_WrlViewer_V2").is_dir()


def test_bp4d_tasks_padding_and_first_frames(generated):
    root, summary = generated["bp4d"]
    assert len(summary["samples"]) == 3 * 8
    by_id = {s["sample_id"]: s for s in summary["samples"]}
    for s_index, subject in enumerate(summary["subjects"]):
        digits, starts_late = bp4d_frame_format(s_index)
        for task, label in BP4D_TASKS.items():
            sample = by_id[f"{subject}_{task}"]
            assert sample["label"] == label
            stems = sorted(p.stem for p in (root / "Sequences_2D+3D" / subject / task).glob("*.obj"))
            first = sample["first_frame"]
            assert (first > 0) == starts_late
            assert stems == sorted(f"{first + k:0{digits}d}" for k in range(sample["n_frames"]))
    assert {bp4d_frame_format(k)[0] for k in range(3)} == {3, 4}


def test_bosphorus_files_and_a_subject_missing_one_emotion(generated):
    root, summary = generated["bosphorus"]
    db = root / "BosphorusDB"
    emotion_counts = {s: len(list((db / s).glob(f"{s}_E_*.bnt"))) for s in summary["subjects"]}
    assert emotion_counts == {"bs000": 6, "bs001": 5, "bs002": 6}
    for sample in summary["samples"]:
        for ext in (".bnt", ".png", ".lm3", ".lm2"):
            assert (db / sample["subject"] / f"{sample['sample_id']}{ext}").is_file()
    assert sum(s["sample_id"].split("_")[1] == "LFAU" for s in summary["samples"]) == 3
    assert sum(s["label"] == "neutral" for s in summary["samples"]) == 3


def test_bnt_header_and_size(generated):
    root, summary = generated["bosphorus"]
    path = root / "BosphorusDB" / "bs000" / "bs000_N_N_0.bnt"
    data = path.read_bytes()
    rows, cols, zmin, length = struct.unpack_from("<HHdH", data, 0)
    assert zmin == -1.0e9
    assert data[14:14 + length] == b"bs000_N_N_0.png"
    (count,) = struct.unpack_from("<I", data, 14 + length)
    assert count == 5 * rows * cols and len(data) == 18 + length + 8 * count
    planes = np.frombuffer(data, "<f8", offset=18 + length).reshape(5, rows, cols)
    valid = planes[2] != zmin
    low, high = rows // 4, 3 * rows // 4
    assert planes[1][low][valid[low]].mean() < planes[1][high][valid[high]].mean() - 50  # row 0 is the bottom
    assert ((planes[0] == zmin) == ~valid).all()


def test_4dme_sheet_frames_and_labels(generated):
    root, summary = generated["4dme"]
    sheet = pd.read_excel(root / "4DME_Labelling_Micro_release v1.xlsx", engine="openpyxl")
    assert list(sheet.columns) == ["sub_ID", "fold_name", "fold", "Onset", "Apex", "Offset", "AUs", "Emotion",
                                   "eye blink", "Positive", "Negative", "Surprise", "Repression", "Others"]
    assert len(sheet) == 2 * 3 == len(summary["samples"])
    for row, sample in zip(sheet.itertuples(index=False), summary["samples"]):
        frames = sorted(int(p.stem) for p in (root / "mesh_micro" / row.sub_ID / row.fold_name).glob("*.obj"))
        assert frames == list(range(row.Onset, row.Offset + 1))
        assert row.Onset <= row.Apex <= row.Offset
        aus = [int(a.split("(")[0][2:]) for a in row.AUs.split("+")]
        expected = expressions.micro_labels(aus)
        assert [c for c in expressions.MICRO_CLASSES if getattr(row, c.capitalize()) == 1] == expected
        assert sample["labels"] == "|".join(expected)


# ----------------------------------------------------------------------------- ICT-FaceKit source
needs_ict = pytest.mark.skipif(not (ICT_DIR / "generic_neutral_mesh.obj").is_file(), reason="ICT-FaceKit subset absent")


@needs_ict
def test_ict_emotions_move_the_right_regions():
    from smile_vlm.synth.ict import IctFaceModel, emotion_meshes

    model = IctFaceModel(ICT_DIR, np.random.default_rng(1))
    meshes = emotion_meshes(ICT_DIR, np.random.default_rng(1), jitter=0.0)
    neutral = meshes["neutral"].vertices
    assert neutral[:, 0].max() - neutral[:, 0].min() > 180  # whole head in mm, not cm
    corners, chin = model.bu83[[48, 54]], model.bu83[75]
    assert (meshes["happiness"].vertices[corners, 1] - neutral[corners, 1]).min() > 2
    assert meshes["surprise"].vertices[chin, 1] - neutral[chin, 1] < -5
    brows = model.bu83[16:36]
    assert (meshes["surprise"].vertices[brows, 1] - neutral[brows, 1]).mean() > 2


@needs_ict
def test_generate_with_the_ict_source_writes_readable_bu3dfe(tmp_path):
    from smile_vlm.readers.vrml import read_vrml

    settings = {**SMALL, "face_source": "ict", "ict_dir": str(ICT_DIR), "subjects": {"bu3dfe": 1}}
    summary = generate("bu3dfe", tmp_path, settings)
    assert len(summary["samples"]) == 25
    mesh = read_vrml(tmp_path / "F0001" / f"{summary['samples'][-1]['sample_id']}_F3D.wrl")
    assert mesh.n_vertices == 11248 and mesh.texture is not None
