"""BP4D action-unit occurrence codes (AUCoding/AU_OCC) read into the manifest's aus column."""

from __future__ import annotations

import pytest

from smile_vlm.errors import ScanError
from smile_vlm.index import index_dataset
from smile_vlm.readers import aucoding
from test_index import make_bp4d


def write_occ(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_codes_of_every_frame_with_9_as_not_coded(tmp_path):
    path = write_occ(tmp_path / "F001_T1.csv", ["0,1,2,4,12", "8,1,0,0,1", "9,0,0,0,0", "10,9,9,9,9", "11,9,1,0,9"])
    frames = aucoding.read_au_occ(path)
    assert frames == {8: {1: 1, 2: 0, 4: 0, 12: 1}, 9: {1: 0, 2: 0, 4: 0, 12: 0}, 10: {}, 11: {2: 1, 4: 0}}
    assert [aucoding.occurrence_text(frames[k]) for k in (8, 9, 10, 11)] == ["AU1+AU12", "none", "", "AU2"]
    # BP4D+ names the AU in the header
    plus = write_occ(tmp_path / "plus.csv", ["frame,AU01,AU12", "3,1,1"])
    assert aucoding.read_au_occ(plus) == {3: {1: 1, 12: 1}}


@pytest.mark.parametrize("lines, reason", [
    ([], "empty"),
    (["0,1,smile"], "header column 3 is 'smile'"),
    (["0"], "names no action unit"),
    (["0,1,2", "8,1"], "line 2 has 2 cells, the header 3"),
    (["0,1,2", "8,1,x"], "line 2: a cell is not an integer"),
    (["0,1,2", "8,1,5"], "code 5"),
    (["0,1,2", "8,1,0", "8,0,0"], "frame 8 is coded twice"),
])
def test_malformed_files_are_one_line_errors_naming_the_file(tmp_path, lines, reason):
    path = write_occ(tmp_path / "bad.csv", lines) if lines else tmp_path / "bad.csv"
    if not lines:
        path.write_text("\n\n")
    with pytest.raises(ScanError) as error:
        aucoding.read_au_occ(path)
    assert str(error.value).startswith(str(path)) and reason in str(error.value) and "\n" not in str(error.value)


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = write_occ(tmp_path / "big.csv", ["0,1", *[f"{k},1" for k in range(100)]])
    monkeypatch.setattr(aucoding, "MAX_BYTES", 64)
    with pytest.raises(ScanError, match="larger than"):
        aucoding.read_au_occ(path)


def test_index_fills_aus_per_frame_and_accounts_for_every_coding_file(tmp_path):
    make_bp4d(tmp_path)
    folder = tmp_path / "AUCoding" / "AU_OCC"
    write_occ(folder / "F001_T1.csv", ["0,1,6,12", "8,0,1,1", "9,0,0,0", "10,9,9,9"])
    broken = write_occ(folder / "F001_T8.csv", ["0,1,6,12", "8,0,1"])
    outside = write_occ(folder / "F001_T2.csv", ["0,1", "8,1"])  # T2 is not in the task map below
    intensity = write_occ(tmp_path / "AUCoding" / "AU_INT" / "AU06" / "F001_T1_AU06.csv", ["8,3"])
    settings = {"validate": "header", "task_classes": {"T1": "happiness", "T8": "disgust"}}
    manifest, rejects, skipped = index_dataset("bp4d", tmp_path, settings)

    f001 = manifest[manifest["sample_id"] == "F001_T1"].set_index("frame")["aus"].to_dict()
    assert f001 == {8: "AU6+AU12", 9: "none", 10: ""}
    assert set(manifest.loc[manifest["sample_id"] != "F001_T1", "aus"]) == {""}  # no file, or a broken one
    assert rejects.set_index("path").loc[str(broken), "reason"] == "line 2 has 3 cells, the header 4"
    reasons = skipped.set_index("path")["reason"].to_dict()
    assert reasons[str(outside)] == "AU occurrence codes of no sequence in the manifest"
    assert reasons[str(intensity)] == "AU intensities and tracked features: not used"
    assert str(folder / "F001_T1.csv") not in reasons


def test_synthetic_bp4d_codes_reach_the_manifest_frame_by_frame(tmp_path):
    from smile_vlm.synth import generate
    from smile_vlm.synth.expressions import ACTION_UNITS

    generate("bp4d", tmp_path, {"seed": 3, "resolution_4d": 22, "subjects": {"bp4d": 1}, "frames": {"bp4d": 4},
                                "texture_size": 32})
    manifest, rejects, skipped = index_dataset("bp4d", tmp_path, {"validate": "header"})
    assert rejects.empty and not skipped["path"].str.contains("AU_OCC").any()
    for sample_id, frames in manifest.groupby("sample_id"):
        codes = aucoding.read_au_occ(tmp_path / "AUCoding" / "AU_OCC" / f"{sample_id}.csv")
        assert set(codes) == set(frames["frame"])  # the file codes exactly the sequence's frames
        assert frames["aus"].tolist() == [aucoding.occurrence_text(codes[f]) for f in frames["frame"]]
        assert all(set(c) == set(ACTION_UNITS) for c in codes.values())  # AUs it does not model: 9
    happy = manifest[manifest["label"] == "happiness"]["aus"]
    assert happy.str.contains(r"\bAU12\b").any() and (manifest["aus"] != "").all()
