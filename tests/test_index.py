"""Indexers on tiny hand-made trees: one broken file costs exactly one reject row."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest_readers import vrml_text, write_4dme_xlsx, write_bnd, write_bnt, write_vrml
from smile_vlm.errors import ScanError
from smile_vlm.index import MANIFEST_COLUMNS, index_dataset, write_index

BROKEN_VRML = "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0"


def one_reject(rejects: pd.DataFrame, path) -> str:
    assert rejects["path"].tolist() == [str(path)]
    return rejects["reason"].iloc[0]


# ----------------------------------------------------------------------------- BU-3DFE


def make_bu3dfe(root):
    for subject, race in [("F0001", "WH"), ("M0002", "AE")]:
        for code in ["AN01", "HA04", "NE00"]:
            base = f"{subject}_{code}{race}"
            write_vrml(root / subject / f"{base}_F3D.wrl", url=f"{base}_F3D.bmp")
            write_vrml(root / subject / f"{base}_RAW.wrl", url=f"{base}_F3D.bmp")
            write_bnd(root / subject / f"{base}_F3D.bnd")
    (root / "M0002" / "M0002_AN01AE_F3D.wrl").write_text(BROKEN_VRML)


@pytest.mark.parametrize("validate", ["full", "header"])
def test_bu3dfe(tmp_path, validate):
    make_bu3dfe(tmp_path)
    manifest, rejects = index_dataset("bu3dfe", tmp_path, {"validate": validate})
    assert list(manifest.columns) == MANIFEST_COLUMNS
    if validate == "header":  # a cut file passes the cheap checks
        assert rejects.empty and len(manifest) == 6
        return
    assert "truncated" in one_reject(rejects, tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl")
    assert manifest["sample_id"].tolist() == [
        "F0001_AN01WH", "F0001_HA04WH", "F0001_NE00WH", "M0002_HA04AE", "M0002_NE00AE",
    ]
    first = manifest.iloc[0]
    assert (first.subject, first.label, first.labels, first.intensity, first.sex, first.race, first.frame) == (
        "F0001", "anger", "anger", 1, "F", "WH", 0,
    )
    assert first.mesh_path == str(tmp_path / "F0001" / "F0001_AN01WH_F3D.wrl")
    assert first.texture_path == str(tmp_path / "F0001" / "F0001_AN01WH_F3D.bmp")
    assert first.landmark_path == str(tmp_path / "F0001" / "F0001_AN01WH_F3D.bnd")
    assert manifest["label"].tolist()[1:3] == ["happiness", "neutral"]
    assert manifest["intensity"].tolist()[1:3] == [4, 0]


def test_bu3dfe_broken_landmarks_keep_the_sample(tmp_path):
    make_bu3dfe(tmp_path)
    (tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl").unlink()
    write_bnd(tmp_path / "F0001" / "F0001_HA04WH_F3D.bnd", n=80)
    manifest, rejects = index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    assert "80 landmark rows" in one_reject(rejects, tmp_path / "F0001" / "F0001_HA04WH_F3D.bnd")
    assert len(manifest) == 5
    assert manifest.set_index("sample_id").loc["F0001_HA04WH", "landmark_path"] == ""


def test_require_texture_rejects_samples_without_one(tmp_path):
    make_bu3dfe(tmp_path)
    (tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl").unlink()
    (tmp_path / "F0001" / "F0001_NE00WH_F3D.bmp").unlink()
    manifest, rejects = index_dataset("bu3dfe", tmp_path, {"validate": "header", "require_texture": True})
    assert one_reject(rejects, tmp_path / "F0001" / "F0001_NE00WH_F3D.wrl") == "texture missing"
    assert len(manifest) == 4


# ----------------------------------------------------------------------------- BU-4DFE


def make_bu4dfe(root):
    for subject in ["F001", "M002"]:
        for expression in ["Angry", "Happy"]:
            folder = root / subject / expression
            for frame in range(12):  # '10.wrl' must come after '9.wrl'
                # The url names a file that does not exist: the sibling NNN.jpg is the fallback.
                write_vrml(folder / f"{frame:03d}.wrl", url="missing.jpg", texture=False)
                (folder / f"{frame:03d}.jpg").write_bytes(b"jpg")
                write_bnd(root / "BU4DFE_BND_V1.1" / subject / expression / f"{frame:03d}.bnd")
    write_vrml(root / "BU_WrlViewer_V2" / "Angry" / "000.wrl")  # not a subject
    (root / "M002" / "Happy" / "007.wrl").write_text("")


@pytest.mark.parametrize("workers", [1, 2])
def test_bu4dfe(tmp_path, workers):
    make_bu4dfe(tmp_path)
    manifest, rejects = index_dataset("bu4dfe", tmp_path, {"validate": "full", "workers": workers})
    assert "no '#VRML' header" in one_reject(rejects, tmp_path / "M002" / "Happy" / "007.wrl")
    assert len(manifest) == 4 * 12 - 1
    assert set(manifest["subject"]) == {"F001", "M002"}
    happy = manifest[manifest["sample_id"] == "M002_Happy"]
    assert happy["frame"].tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11]
    assert set(happy["label"]) == {"happiness"} and set(happy["sequence"]) == {"Happy"}
    row = happy.iloc[-1]
    assert row.texture_path == str(tmp_path / "M002" / "Happy" / "011.jpg")
    assert row.landmark_path == str(tmp_path / "BU4DFE_BND_V1.1" / "M002" / "Happy" / "011.bnd")
    assert manifest["sample_id"].tolist()[:13] == ["F001_Angry"] * 12 + ["F001_Happy"]


# ----------------------------------------------------------------------------- BP4D


def make_bp4d(root):
    sequences = root / "Sequences_2D+3D"
    for subject, width in [("F001", 4), ("M009", 3)]:  # padding differs across subjects
        for task in ["T1", "T2", "T8"]:
            for frame in [8, 9, 10]:
                name = f"{frame:0{width}d}"
                write_vrml(sequences / subject / task / f"{name}.wrl", url=None)
                (sequences / subject / task / f"{name}.jpg").write_bytes(b"jpg")
    nan_vertex = vrml_text([(0, 0, 0), (1, 0, float("nan")), (0, 1, 0)], [(0, 1, 2)], url=None)
    (sequences / "M009" / "T8" / "009.wrl").write_text(nan_vertex)


def test_bp4d_task_map_and_numeric_frames(tmp_path):
    make_bp4d(tmp_path)
    settings = {"validate": "full", "task_classes": {"T1": "happiness", "T8": "disgust"}}
    manifest, rejects = index_dataset("bp4d", tmp_path, settings)
    # The broken frame alone is rejected; T2 is outside the map and skipped without a reject.
    assert "non-finite" in one_reject(rejects, tmp_path / "Sequences_2D+3D" / "M009" / "T8" / "009.wrl")
    assert sorted(set(manifest["task"])) == ["T1", "T8"]
    assert len(manifest) == 2 * 2 * 3 - 1
    m009 = manifest[manifest["sample_id"] == "M009_T8"]
    assert m009["frame"].tolist() == [8, 10] and set(m009["label"]) == {"disgust"}
    assert m009["texture_path"].tolist()[-1] == str(tmp_path / "Sequences_2D+3D" / "M009" / "T8" / "010.jpg")
    f001 = manifest[manifest["sample_id"] == "F001_T1"]
    assert f001["frame"].tolist() == [8, 9, 10]
    assert f001["mesh_path"].tolist()[-1].endswith("0010.wrl")


def test_bp4d_default_task_map_and_missing_folder(tmp_path):
    make_bp4d(tmp_path)
    manifest, _ = index_dataset("bp4d", tmp_path, {"validate": "header"})
    assert manifest.drop_duplicates("sample_id").set_index("sample_id")["label"].to_dict() == {
        "F001_T1": "happiness", "F001_T2": "sadness", "F001_T8": "disgust",
        "M009_T1": "happiness", "M009_T2": "sadness", "M009_T8": "disgust",
    }
    with pytest.raises(ScanError, match="Sequences_2D\\+3D not found"):
        index_dataset("bp4d", tmp_path / "Sequences_2D+3D" / "F001", {})


# ----------------------------------------------------------------------------- Bosphorus


def make_bosphorus(root):
    for part, subject in [("BosphorusDB_p1", "bs000"), ("BosphorusDB_p2", "bs001")]:
        for stem in ["E_HAPPY_0", "N_N_0", "N_N_1", "LFAU_12LW_0", "YR_R10_0"]:
            path = write_bnt(root / part / subject / f"{subject}_{stem}.bnt")
            path.with_suffix(".lm3").write_bytes(b"# 3D Landmark File\r\n\r\n1 landmarks:\r\nNose tip\r\n0 0 40\r\n")
    bad = root / "BosphorusDB_p2" / "bs001" / "bs001_N_N_1.bnt"
    bad.write_bytes(bad.read_bytes()[:-8])


@pytest.mark.parametrize("validate", ["full", "header"])
def test_bosphorus(tmp_path, validate):
    make_bosphorus(tmp_path)
    manifest, rejects = index_dataset("bosphorus", tmp_path, {"validate": validate})
    bad = tmp_path / "BosphorusDB_p2" / "bs001" / "bs001_N_N_1.bnt"
    assert "file size" in one_reject(rejects, bad)  # the header check catches truncation too
    assert len(manifest) == 9
    labels = manifest.set_index("sample_id")["label"].to_dict()
    assert labels["bs000_E_HAPPY_0"] == "happiness"
    assert labels["bs000_N_N_1"] == "neutral"
    assert labels["bs000_LFAU_12LW_0"] == "" and labels["bs001_YR_R10_0"] == ""
    row = manifest.set_index("sample_id").loc["bs001_E_HAPPY_0"]
    assert row.texture_path == str(tmp_path / "BosphorusDB_p2" / "bs001" / "bs001_E_HAPPY_0.png")
    assert row.landmark_path == str(tmp_path / "BosphorusDB_p2" / "bs001" / "bs001_E_HAPPY_0.lm3")
    assert manifest["subject"].tolist() == ["bs000"] * 5 + ["bs001"] * 4


# ----------------------------------------------------------------------------- 4DME


def make_4dme(root):
    rows = [
        ["S01", "clip_a", 1, 100, 101, 102, "AU4+AU7", "Negative", 0, 0, 1, 1, 0, 0],
        ["S01", "clip_b", 1, 7, 8, 10, "AU12", "Positive", 0, 1, 0, 0, 0, 0],
        ["S02", "clip_c", 2, 5, 6, 7, "AU1", "Surprise", 0, 0, 0, 1, 0, 0],  # one frame missing
    ]
    write_4dme_xlsx(root / "4DME_Labelling_Micro_release v1.xlsx", rows)
    for subject, clip, frames in [("S01", "clip_a", range(100, 103)), ("S01", "clip_b", range(7, 11)),
                                  ("S02", "clip_c", [5, 7])]:
        for frame in frames:
            write_vrml(root / "mesh_micro" / subject / clip / f"img_{frame}.wrl", url=None)
    (root / "mesh_micro" / "S01" / "clip_b" / "img_9.wrl").write_text("#VRML V2.0 utf8\n{")


def test_4dme(tmp_path):
    make_4dme(tmp_path)
    manifest, rejects = index_dataset("4dme", tmp_path, {"validate": "full"})
    assert rejects["path"].tolist() == [
        str(tmp_path / "mesh_micro" / "S01" / "clip_b" / "img_9.wrl"),
        str(tmp_path / "mesh_micro" / "S02" / "clip_c"),
    ]
    assert "annotation onset 5, offset 7 needs 3" in rejects["reason"].iloc[1]
    assert manifest["sample_id"].tolist() == ["S01_clip_a"] * 3 + ["S01_clip_b"] * 3
    assert manifest["frame"].tolist() == [100, 101, 102, 7, 8, 10]
    a = manifest.iloc[0]
    assert (a.label, a.labels, a.onset, a.apex, a.offset, a.aus, a.sequence) == (
        "negative", "negative|surprise", 100, 101, 102, "AU4+AU7", "clip_a",
    )


def test_write_index_writes_both_tables(tmp_path):
    make_4dme(tmp_path / "data")
    manifest_csv, rejects_csv = tmp_path / "out" / "manifest.csv", tmp_path / "out" / "rejects.csv"
    write_index("4dme", tmp_path / "data", {"validate": "header"}, manifest_csv, rejects_csv)
    manifest = pd.read_csv(manifest_csv, keep_default_na=False)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["frame"].tolist() == [100, 101, 102, 7, 8, 9, 10]  # header mode keeps img_9
    assert pd.read_csv(rejects_csv)["path"].tolist() == [str(tmp_path / "data" / "mesh_micro" / "S02" / "clip_c")]
    assert sorted(p.name for p in manifest_csv.parent.iterdir()) == ["manifest.csv", "rejects.csv"]


def test_unknown_dataset_and_validate_mode(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        index_dataset("ck+", tmp_path, {})
    with pytest.raises(ValueError, match="validate"):
        index_dataset("bu3dfe", tmp_path, {"validate": "quick"})
