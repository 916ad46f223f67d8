"""Indexers on tiny hand-made trees: one broken file costs exactly one reject row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest_readers import POLY_VERTICES, vrml_text, write_4dme_xlsx, write_bnd, write_bnt, write_vrml
from smile_vlm import readers
from smile_vlm.dynamic import sample_frames
from smile_vlm.errors import ScanError
from smile_vlm.index import MANIFEST_COLUMNS, index_dataset, write_index
from smile_vlm.readers import read_mesh

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
            write_bnd(root / subject / f"{base}_F3D.bnd", on=POLY_VERTICES)
    (root / "M0002" / "M0002_AN01AE_F3D.wrl").write_text(BROKEN_VRML)


@pytest.mark.parametrize("validate", ["sampled", "full", "header"])
def test_bu3dfe(tmp_path, validate):
    make_bu3dfe(tmp_path)
    manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": validate})
    assert list(manifest.columns) == MANIFEST_COLUMNS
    # a cut file ends inside a block: even the header check, which reads the file's end, sees it
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
    write_bnd(tmp_path / "F0001" / "F0001_HA04WH_F3D.bnd", n=80, on=POLY_VERTICES)
    manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    assert "80 landmark rows" in one_reject(rejects, tmp_path / "F0001" / "F0001_HA04WH_F3D.bnd")
    assert len(manifest) == 5
    assert manifest.set_index("sample_id").loc["F0001_HA04WH", "landmark_path"] == ""


def test_require_texture_rejects_samples_without_one(tmp_path):
    make_bu3dfe(tmp_path)
    (tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl").unlink()
    (tmp_path / "F0001" / "F0001_NE00WH_F3D.bmp").unlink()
    manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": "header", "require_texture": True})
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
                write_bnd(root / "BU4DFE_BND_V1.1" / subject / expression / f"{frame:03d}.bnd", on=POLY_VERTICES)
    write_vrml(root / "BU_WrlViewer_V2" / "Angry" / "000.wrl")  # not a subject
    (root / "M002" / "Happy" / "007.wrl").write_text("")


@pytest.mark.parametrize("workers", [1, 2])
def test_bu4dfe(tmp_path, workers):
    make_bu4dfe(tmp_path)
    manifest, rejects, skipped = index_dataset("bu4dfe", tmp_path, {"validate": "full", "workers": workers})
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


# ----------------------------------------------------------------------------- validate: sampled

# Well-formed outside its numbers (header, blocks, closed scene): only a full parse sees the
# index 7 of a 3-vertex mesh.
BAD_INDEX_VRML = vrml_text([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1, 7)], url=None)


def rendered_frames(manifest: pd.DataFrame, frames) -> set[str]:
    """The mesh files render_shard reads: per sample, sample_frames over its frames in order."""
    picked = set()
    for _, sample in manifest.groupby("sample_id"):
        sample = sample.sort_values("frame", kind="stable")
        picked.update(sample["mesh_path"].iloc[sample_frames(len(sample), frames)])
    return picked


def test_sampled_parses_what_render_reads_and_repicks_around_rejects(tmp_path, monkeypatch):
    make_bu4dfe(tmp_path)
    angry = tmp_path / "F001" / "Angry"
    # of 12 frames, frames=4 picks 0 4 7 11. Frame 4 fails its full parse; among the 11 left the
    # pick moves to frame 3, also bad, then to frame 5, bad too; frame 9 is bad but never
    # picked, and frame 10 is cut: its end fails the header check, and a parse confirms it.
    for frame in (3, 4, 5, 9):
        (angry / f"{frame:03d}.wrl").write_text(BAD_INDEX_VRML)
    cut = angry / "010.wrl"
    data = cut.read_bytes()
    cut.write_bytes(data[: data.index(b"coordIndex [") + 20])  # inside the coordIndex block
    parsed = []
    real_read_mesh = readers.read_mesh
    monkeypatch.setattr(readers, "read_mesh", lambda path, **kw: parsed.append(str(path)) or real_read_mesh(path, **kw))

    manifest, rejects, _ = index_dataset("bu4dfe", tmp_path, {"validate": "sampled", "frames": 4, "workers": 1})

    reasons = dict(zip(rejects["path"], rejects["reason"]))
    assert {Path(p).name for p in reasons if "Angry" in p} == {"003.wrl", "004.wrl", "005.wrl", "010.wrl"}
    assert "refers to index 7" in reasons[str(angry / "004.wrl")]
    assert "truncated" in reasons[str(cut)]
    assert str(angry / "009.wrl") in set(manifest["mesh_path"])  # bad, but no rendering reads it
    picked = rendered_frames(manifest, 4)
    # 8 good Angry frames are left: 4 picks of 8 are 0 2 5 7, i.e. files 000 002 008 011
    assert sorted(Path(p).name for p in picked if "F001/Angry" in p) == ["000.wrl", "002.wrl", "008.wrl", "011.wrl"]
    for path in picked:  # everything rendering will read was parsed here, and parses
        assert path in parsed
        read_mesh(path)
    # Angry: 4 + the re-picks 3, 5, then 2 and 8, + the cut 10; M002/Happy: its empty frame 7
    # was among the first 4 picks, then 3 and 9; the two other sequences 4 each. No file is
    # parsed twice, and no frame that is neither picked nor doubted is parsed.
    assert len(parsed) == 9 + 6 + 4 + 4 and len(set(parsed)) == len(parsed)
    assert not {str(angry / f"{frame:03d}.wrl") for frame in (1, 6, 9)} & set(parsed)


@pytest.mark.parametrize("validate", ["sampled", "header"])
def test_header_checks_never_reject_a_file_that_parses(tmp_path, validate):
    make_bu4dfe(tmp_path)
    odd = tmp_path / "F001" / "Angry" / "005.wrl"  # not among the 4 frames rendered
    odd.write_bytes(odd.read_bytes()[:-60])  # ends inside the trailing Viewpoint: the shape is whole
    read_mesh(odd)
    manifest, rejects, _ = index_dataset("bu4dfe", tmp_path, {"validate": validate, "frames": 4})
    assert str(odd) in set(manifest["mesh_path"]) and str(odd) not in set(rejects["path"])


def test_sampled_parses_every_static_scan_and_every_frame_with_frames_all(tmp_path):
    make_bu3dfe(tmp_path)
    (tmp_path / "F0001" / "F0001_HA04WH_F3D.wrl").write_text(BAD_INDEX_VRML)
    _, rejects, _ = index_dataset("bu3dfe", tmp_path, {"validate": "sampled"})
    assert set(rejects["path"]) == {str(tmp_path / "F0001" / "F0001_HA04WH_F3D.wrl"),
                                    str(tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl")}
    _, header_rejects, _ = index_dataset("bu3dfe", tmp_path, {"validate": "header"})
    assert str(tmp_path / "F0001" / "F0001_HA04WH_F3D.wrl") not in set(header_rejects["path"])

    make_bu4dfe(tmp_path / "4d")
    (tmp_path / "4d" / "F001" / "Angry" / "009.wrl").write_text(BAD_INDEX_VRML)
    every, _, _ = index_dataset("bu4dfe", tmp_path / "4d", {"validate": "full"})
    assert str(tmp_path / "4d" / "F001" / "Angry" / "009.wrl") not in set(every["mesh_path"])
    sampled_all, _, _ = index_dataset("bu4dfe", tmp_path / "4d", {"validate": "sampled", "frames": "all"})
    pd.testing.assert_frame_equal(sampled_all, every)
    with pytest.raises(ValueError, match="frames"):
        index_dataset("bu4dfe", tmp_path / "4d", {"validate": "sampled", "frames": 0})


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
    manifest, rejects, skipped = index_dataset("bp4d", tmp_path, settings)
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
    manifest, _, _ = index_dataset("bp4d", tmp_path, {"validate": "header"})
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
            # the nose tip on a valid grid point
            path.with_suffix(".lm3").write_bytes(b"# 3D Landmark File\r\n\r\n1 landmarks:\r\nNose tip\r\n1 0 31\r\n")
    bad = root / "BosphorusDB_p2" / "bs001" / "bs001_N_N_1.bnt"
    bad.write_bytes(bad.read_bytes()[:-8])


@pytest.mark.parametrize("validate", ["full", "header"])
def test_bosphorus(tmp_path, validate):
    make_bosphorus(tmp_path)
    manifest, rejects, skipped = index_dataset("bosphorus", tmp_path, {"validate": validate})
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
        ["S01", "clip_a", 1, 100, 101, 102, "AU4+AU7", "Negative+Surprise", 0, 0, 1, 1, 0, 0],
        ["S01", "clip_b", 1, 7, 8, 10, "AU12", "Positive", 0, 1, 0, 0, 0, 0],
        ["S02", "clip_c", 2, 5, 6, 7, "AU1", "Surprise", 0, 0, 0, 1, 0, 0],  # one frame missing
    ]
    write_4dme_xlsx(root / "4DME_Labelling_Micro_release v1.xlsx", rows)
    for subject, clip, frames in [("S01", "clip_a", range(100, 103)), ("S01", "clip_b", range(7, 11)),
                                  ("S02", "clip_c", [5, 7])]:
        for frame in frames:
            write_vrml(root / "mesh_micro" / subject / clip / f"img_{frame}.wrl", url=None)
    # well-formed outside its numbers, so only a full parse sees the index out of range
    bad_index = vrml_text([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1, 7)], url=None)
    (root / "mesh_micro" / "S01" / "clip_b" / "img_9.wrl").write_text(bad_index)


def test_4dme(tmp_path):
    make_4dme(tmp_path)
    manifest, rejects, skipped = index_dataset("4dme", tmp_path, {"validate": "full"})
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


def test_write_index_writes_three_tables(tmp_path):
    make_4dme(tmp_path / "data")
    manifest_csv, rejects_csv = tmp_path / "out" / "manifest.csv", tmp_path / "out" / "rejects.csv"
    write_index("4dme", tmp_path / "data", {"validate": "header"}, manifest_csv, rejects_csv)
    manifest = pd.read_csv(manifest_csv, keep_default_na=False)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["frame"].tolist() == [100, 101, 102, 7, 8, 9, 10]  # header mode keeps img_9
    assert pd.read_csv(rejects_csv)["path"].tolist() == [str(tmp_path / "data" / "mesh_micro" / "S02" / "clip_c")]
    assert sorted(p.name for p in manifest_csv.parent.iterdir()) == ["manifest.csv", "rejects.csv", "skipped.csv"]
    # img_9 is a mesh (kept in header mode); the missing clip_c frame leaves its two frames skipped
    skipped = pd.read_csv(manifest_csv.parent / "skipped.csv")
    clip_c = tmp_path / "data" / "mesh_micro" / "S02" / "clip_c"
    assert skipped["path"].tolist() == [str(clip_c / "img_5.wrl"), str(clip_c / "img_7.wrl")]
    assert set(skipped["reason"]) == {"in a rejected folder (2 frames (5..7); annotation onset 5, offset 7 needs 3)"}


def test_unknown_dataset_and_validate_mode(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        index_dataset("ck+", tmp_path, {})
    with pytest.raises(ValueError, match="validate"):
        index_dataset("bu3dfe", tmp_path, {"validate": "quick"})


# ----------------------------------------------------------------------------- nothing vanishes


def test_case_variants_are_skipped_with_a_reason_and_upper_case_extensions_accepted(tmp_path):
    make_bu3dfe(tmp_path)
    (tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl").unlink()
    write_vrml(tmp_path / "f0003" / "F0003_AN01WH_F3D.wrl", url="F0003_AN01WH_F3D.bmp")
    write_vrml(tmp_path / "F0004 " / "F0004_AN01WH_F3D.wrl", url="F0004_AN01WH_F3D.bmp")
    shouted = tmp_path / "F0001" / "F0001_SU02WH_F3D.WRL"
    write_vrml(shouted, url="F0001_SU02WH_F3D.bmp")
    (tmp_path / "notes.txt").write_text("from the DVD")
    manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    assert rejects.empty
    assert str(shouted) in set(manifest["mesh_path"])  # '.WRL' is a VRML scan
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    assert reasons[str(tmp_path / "f0003" / "F0003_AN01WH_F3D.wrl")] == (
        "BU-3DFE subject folder 'f0003' differs from the expected spelling 'F0003' only in case, spacing "
        "or Unicode form; rename it to use it")
    assert "'F0004 ' differs from the expected spelling 'F0004'" in reasons[str(tmp_path / "F0004 " / "F0004_AN01WH_F3D.bmp")]
    assert reasons[str(tmp_path / "F0001" / "F0001_AN01WH_RAW.wrl")].startswith("RAW mesh: not a sample")
    assert reasons[str(tmp_path / "M0002" / "M0002_AN01AE_F3D.bnd")].startswith("texture or landmarks of an F3D scan")
    assert reasons[str(tmp_path / "notes.txt")].startswith("not part of the BU-3DFE layout")
    files = {str(p) for p in tmp_path.rglob("*") if p.is_file()}
    used = {p for c in ("mesh_path", "texture_path", "landmark_path") for p in manifest[c] if p}
    assert files == used | set(skipped["path"]) and not used & set(skipped["path"])


def test_bosphorus_and_bp4d_folder_variants_are_skipped_not_dropped(tmp_path):
    make_bosphorus(tmp_path / "bos")
    write_bnt(tmp_path / "bos" / "BosphorusDB_p1" / "BS002" / "bs002_N_N_0.bnt")
    _, _, skipped = index_dataset("bosphorus", tmp_path / "bos", {"validate": "header"})
    bs002 = skipped[skipped["path"].str.contains("BS002")]
    assert len(bs002) == 2 and bs002["reason"].str.contains("'BS002' differs from the expected spelling 'bs002'").all()
    assert skipped["path"].str.endswith(".lm2").sum() == 0  # make_bosphorus writes none
    make_bp4d(tmp_path / "bp4d")
    manifest, _, skipped = index_dataset("bp4d", tmp_path / "bp4d", {"validate": "header", "task_classes": {"T1": "happiness"}})
    assert set(manifest["task"]) == {"T1"}
    t2 = skipped[skipped["path"].str.contains("/T2/")]
    assert len(t2) == 12 and set(t2["reason"]) == {"task 'T2' is not in datasets.bp4d.task_classes"}


def test_overflowing_float32_is_rejected_at_the_index(tmp_path):
    make_bu3dfe(tmp_path)
    (tmp_path / "M0002" / "M0002_AN01AE_F3D.wrl").unlink()
    path = tmp_path / "F0001" / "F0001_HA04WH_F3D.wrl"
    path.write_text(path.read_text().replace("1 1 0,", "1 1e39 0,", 1))
    _, rejects, _ = index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    assert one_reject(rejects, path) == "vertex coordinates value 1e+39 does not fit in float32 (max 3.4e+38)"


# ----------------------------------------------------------------------------- one identity per person


@pytest.mark.parametrize("other", ["s01", "\u040501"])  # case, and a Cyrillic DZE that looks like S
def test_two_spellings_of_one_subject_stop_the_index_unless_declared(tmp_path, other):
    make_4dme(tmp_path)
    rows = [["S01", "clip_a", 1, 100, 101, 102, "AU4+AU7", "Negative+Surprise", 0, 0, 1, 1, 0, 0],
            [other, "clip_b", 1, 7, 8, 10, "AU12", "Positive", 0, 1, 0, 0, 0, 0]]
    write_4dme_xlsx(tmp_path / "4DME_Labelling_Micro_release v1.xlsx", rows)
    (tmp_path / "mesh_micro" / other).mkdir(exist_ok=True)
    for frame in range(7, 11):
        write_vrml(tmp_path / "mesh_micro" / other / "clip_b" / f"img_{frame}.wrl", url=None)
    with pytest.raises(ScanError, match=f"subjects 'S01' and '{other}' are one identity .*confusable skeleton; "
                                        f".*same_person: {{'{other}': 'S01'}}"):
        index_dataset("4dme", tmp_path, {"validate": "header"})
    manifest, _, _ = index_dataset("4dme", tmp_path, {"validate": "header", "same_person": {other: "S01"}})
    assert set(manifest["subject"]) == {"S01"} and manifest["sample_id"].nunique() == 2


def test_4dme_subject_path_is_never_read(tmp_path):
    make_4dme(tmp_path / "data")
    outside = tmp_path / "elsewhere" / "clip_x"
    for frame in (1, 2):
        write_vrml(outside / f"{frame}.wrl", url=None)
    rows = [["../../elsewhere", "clip_x", 1, 1, 1, 2, "AU12", "Positive", 0, 1, 0, 0, 0, 0]]
    write_4dme_xlsx(tmp_path / "data" / "4DME_Labelling_Micro_release v1.xlsx", rows)
    manifest, rejects, _ = index_dataset("4dme", tmp_path / "data", {"validate": "full"})
    assert manifest.empty
    assert rejects["reason"].str.contains("row 2 \\(../../elsewhere/clip_x\\): sub_ID '../../elsewhere' is a path").any()


def test_index_log_has_counts_per_subject_and_class_and_the_published_sizes(tmp_path, caplog):
    make_bu3dfe(tmp_path)
    with caplog.at_level("INFO", logger="smile_vlm.index"):
        index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "smile_vlm.index")
    assert "BU-3DFE: 5 samples (5 mesh files) of 2 subjects; rejected: 1, files skipped: 8" in text
    table = text[text.index("samples per subject and class:"):].splitlines()
    assert table[1].split() == ["class", "anger", "happiness", "neutral", "total"]
    assert table[3].split() == ["F0001", "1", "1", "1", "3"] and table[4].split() == ["M0002", "0", "1", "1", "2"]
    assert ("BU-3DFE found 2 subjects, 5 samples; the published release has 100 subjects, "
            "2500 scans (25 per subject)") in text


def test_published_sizes_and_defaults_are_written_once():
    from pathlib import Path

    import yaml

    from smile_vlm.index import DEFAULT_SETTINGS, DISPLAY_NAMES
    from smile_vlm.readers.names import PUBLISHED_SIZES

    repo = Path(__file__).resolve().parents[1]
    rows = {line.split("|")[1].strip(): line for line in (repo / "docs" / "datasets.md").read_text().splitlines()
            if line.startswith("| ") and "|" in line[2:]}
    for dataset, size in PUBLISHED_SIZES.items():
        name = DISPLAY_NAMES[dataset]
        row = rows[name]
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert cells[1] == (str(size.subjects) if size.subjects else "not published"), name
        assert cells[2].startswith(f"{size.samples} "), name
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    index = schema["properties"]["index"]["properties"]
    assert index["max_file_mb"]["default"] == DEFAULT_SETTINGS["max_file_mb"]
    assert index["validate"]["default"] == DEFAULT_SETTINGS["validate"]
    assert schema["properties"]["render"]["properties"]["frames"]["default"] == DEFAULT_SETTINGS["frames"]
    assert schema["$defs"]["dataset"]["properties"]["same_person"]["default"] == DEFAULT_SETTINGS["same_person"]


def test_index_log_names_subjects_with_fewer_samples_than_the_release(tmp_path, caplog):
    make_bu3dfe(tmp_path)  # 3 scans per subject where the release has 25
    with caplog.at_level("INFO", logger="smile_vlm.index"):
        index_dataset("bu3dfe", tmp_path, {"validate": "header"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "2 of 2 subjects do not have the release's 25 samples each: F0001 (3), M0002 (2)" in warnings
