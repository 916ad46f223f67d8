"""Hostile values that parse: scans that are no surface, landmarks off their scan, a .bnt with its
rows and columns swapped, an OBJ without vertices, a 4DME sheet that is a FIFO or a device link.

Like tests/test_fuzz_integrity.py (whose synthetic datasets and accounting it reuses): each
damaged file is refused with its reason, and every other file is indexed as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest

from smile_vlm.errors import ScanError
from smile_vlm.index import index_dataset
from smile_vlm.readers import read_mesh
from test_fuzz_integrity import SHEET, assert_accounted, fresh, landmark_file, mesh_files, pristine  # noqa: F401


def _same_vertex_everywhere(path: Path) -> None:
    """Every vertex of a VRML or OBJ scan at one point: the file parses, the scan is no surface."""
    text = path.read_text()
    if path.suffix == ".obj":
        path.write_text(re.sub(r"(?m)^v .*$", "v 1.5 2.5 3.5", text))
        return
    start = text.index("point [\n") + len("point [\n")
    count = len(read_mesh(path).vertices)
    path.write_text(text[:start] + ",\n".join(["1.5 2.5 3.5"] * count) + "\n" + text[text.index("]", start):])


def _bnd_rewritten(path: Path, row: int, change) -> None:
    lines = path.read_text().splitlines()
    lines[row] = change(lines[row].split())
    path.write_text("\n".join(lines) + "\n")


def _slips(root: Path, name: str) -> tuple[dict, set]:
    """Damage one scan or landmark file per kind of value that parses but is wrong; returns
    ({path: reason pattern}, scans that keep their row without their landmark file)."""
    meshes = mesh_files(root, name)
    refused, without_landmarks = {}, set()
    if name in ("bu3dfe", "bu4dfe"):
        bnd = landmark_file(root, name, meshes[0])
        _bnd_rewritten(bnd, 0, lambda f: " ".join(["99999999", *f[1:]]))
        refused[bnd] = "row 1: vertex index 99999999 but the scan has only"
        bnd = landmark_file(root, name, meshes[1])
        _bnd_rewritten(bnd, 5, lambda f: " ".join([f[0], f[1], f[2], str(float(f[3]) + 1000)]))
        refused[bnd] = "row 6: landmark .* from the nearest vertex .* not on this scan"
        without_landmarks |= {meshes[0], meshes[1]}
        _same_vertex_everywhere(meshes[2])
        refused[meshes[2]] = r"degenerate geometry: 1 distinct vertex position\(s\)"
    elif name == "bp4d":
        meshes[0].write_text("".join(line for line in meshes[0].read_text().splitlines(True)
                                     if not line.startswith("v ")))
        refused[meshes[0]] = r"no vertices \(no 'v' lines\)"
        _same_vertex_everywhere(meshes[1])
        refused[meshes[1]] = r"degenerate geometry: 1 distinct vertex position\(s\)"
    elif name == "bosphorus":
        lm3 = landmark_file(root, name, meshes[0])
        lm3.write_bytes(re.sub(rb"Nose tip\r\n[^\r]*", b"Nose tip\r\n1e39 0 0", lm3.read_bytes()))
        refused[lm3] = "coordinates for 'Nose tip' value 1e\\+39 does not fit in float32"
        without_landmarks.add(meshes[0])
        data = meshes[1].read_bytes()
        nrows, ncols = struct.unpack_from("<HH", data)
        meshes[1].write_bytes(struct.pack("<HH", ncols, nrows) + data[4:])
        refused[meshes[1]] = f"the header's {ncols} rows and {nrows} columns look swapped"
    return refused, without_landmarks


@pytest.mark.parametrize("name", ["bu3dfe", "bu4dfe", "bp4d", "bosphorus"])
def test_values_that_parse_but_are_wrong_are_refused_and_nothing_else_is_lost(pristine, tmp_path, name):
    root = fresh(pristine, tmp_path, name)
    before, rejects, _ = index_dataset(name, root, {"validate": "full"})
    assert rejects.empty
    refused, without_landmarks = _slips(root, name)

    manifest, rejects, skipped = index_dataset(name, root, {"validate": "full"})

    reasons = dict(zip(rejects["path"], rejects["reason"]))
    assert set(reasons) == {str(p) for p in refused}, reasons
    for path, pattern in refused.items():
        assert re.search(pattern, reasons[str(path)]), (path, reasons[str(path)])
    expected = before[~before["mesh_path"].isin({str(p) for p in refused})].reset_index(drop=True)
    expected.loc[expected["mesh_path"].isin({str(p) for p in without_landmarks}), "landmark_path"] = ""
    pd.testing.assert_frame_equal(manifest, expected)  # every other scan, as it was
    assert_accounted(root, manifest, rejects, skipped)


def test_4dme_sheet_that_is_a_fifo_or_a_device_link_is_refused_at_once(pristine, tmp_path):
    root = fresh(pristine, tmp_path, "4dme")
    sheet = root / SHEET
    sheet.unlink()
    os.mkfifo(sheet)  # read unbounded, this blocked the index for good
    with pytest.raises(ScanError) as info:
        index_dataset("4dme", root, {"validate": "full"})
    assert str(info.value) == f"{sheet}: not a regular file (a FIFO); only regular files are read"
    if os.path.exists("/dev/zero"):  # read unbounded, this filled memory
        sheet.unlink()
        sheet.symlink_to("/dev/zero")
        with pytest.raises(ScanError) as info:
            index_dataset("4dme", root, {"validate": "full"})
        assert str(info.value).startswith(f"{sheet}: link to /dev/zero, outside the dataset root")
        assert "\n" not in str(info.value)
    # a sheet over the per-file limit is refused before it is read
    shutil.copy(pristine / "4dme" / SHEET, sheet.with_name("copy.xlsx"))
    sheet.unlink()
    sheet.with_name("copy.xlsx").rename(sheet)
    with pytest.raises(ScanError, match=r"per-file limit \(index.max_file_mb\)"):
        index_dataset("4dme", root, {"validate": "full", "max_file_mb": sheet.stat().st_size / 2**20 / 2})
