"""Hostile dataset folders: corrupted files of every format, FIFOs, device links, huge files.

The fuzz test corrupts valid synthetic files of the five datasets with a fixed seed and checks
what a user relies on: the index never crashes, every corrupted file is rejected with a reason,
every file under the root is in exactly one of manifest, rejects and skipped, and no valid file
is lost. The special-file tests show that nothing blocks or reads without bound.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest_readers import write_bnt, write_vrml
from smile_vlm.dynamic import sample_frames
from smile_vlm.errors import ScanError
from smile_vlm.index import index_dataset, shown_path
from smile_vlm.readers import read_mesh
from smile_vlm.readers.bosphorus import read_bnt
from smile_vlm.synth import generate, writers

TINY = {
    "seed": 11,
    "resolution": 20,
    "resolution_4d": 16,
    "subjects": {"bu3dfe": 2, "bu4dfe": 1, "bp4d": 2, "bosphorus": 3, "4dme": 2},
    "frames": {"bu4dfe": 5, "bp4d": 4},
    "micro_clips_per_subject": 3,
    "micro_frames_per_clip": 4,
    "texture_size": 16,
}
MESH_SUFFIXES = {"bu3dfe": "_F3D.wrl", "bu4dfe": ".wrl", "bp4d": ".obj", "bosphorus": ".bnt", "4dme": ".obj"}
SHEET = "4DME_Labelling_Micro_release v1.xlsx"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    for name in MESH_SUFFIXES:
        generate(name, root / name, TINY)
    return root


def fresh(pristine, tmp_path, name) -> Path:
    root = tmp_path / name
    shutil.copytree(pristine / name, root, symlinks=True)
    return root


def mesh_files(root: Path, name: str) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(MESH_SUFFIXES[name]) and "BND" not in str(p))


def on_disk(root: Path) -> set[str]:
    """Every entry the index must account for: files, special files and links (folder links too)."""
    entries = set()
    for folder, subfolders, files in os.walk(root):
        entries.update(os.path.join(folder, f) for f in files)
        entries.update(os.path.join(folder, d) for d in subfolders if os.path.islink(os.path.join(folder, d)))
    return entries


def assert_accounted(root: Path, manifest, rejects, skipped, used=()) -> None:
    """Each entry under root is in exactly one of manifest, rejects, skipped (or a used sheet, or
    BP4D's AU codes, which the index reads into the manifest's ``aus``)."""
    au_codes = sorted((root / "AUCoding" / "AU_OCC").glob("*.csv"))
    read = {str(p) for p in [*used, *au_codes]} - set(rejects["path"])
    disk = {shown_path(p) for p in on_disk(root)} - read
    in_manifest = {p for column in ("mesh_path", "texture_path", "landmark_path") for p in manifest[column] if p}
    buckets = {"manifest": in_manifest & disk, "rejects": set(rejects["path"]) & disk,
               "skipped": set(skipped["path"])}
    assert buckets["skipped"] <= disk, "skipped lists a path that is not under the root"
    assert not buckets["manifest"] & buckets["rejects"]
    assert not buckets["manifest"] & buckets["skipped"]
    assert not buckets["rejects"] & buckets["skipped"]
    missing = disk - buckets["manifest"] - buckets["rejects"] - buckets["skipped"]
    assert not missing, f"files on disk in no table: {sorted(missing)[:5]}"
    assert len(buckets["manifest"]) + len(buckets["rejects"]) + len(buckets["skipped"]) == len(disk)
    assert skipped["reason"].str.len().gt(0).all() and rejects["reason"].str.len().gt(0).all()
    assert not rejects["reason"].str.startswith("unexpected").any(), rejects.to_dict("records")


def landmark_file(root: Path, name: str, mesh: Path) -> Path | None:
    if name == "bu3dfe":
        return mesh.with_suffix(".bnd")
    if name == "bu4dfe":
        return root / "BU4DFE_BND_V1.1" / mesh.parent.parent.name / mesh.parent.name / f"{mesh.stem}.bnd"
    if name == "bosphorus":
        return mesh.with_suffix(".lm3")
    return None


# ----------------------------------------------------------------------------- mutations


def _vrml_blocks(text: str) -> list[tuple[int, int]]:
    """Spans of the coord point and coordIndex numbers, where any stray byte is detectable."""
    spans = []
    for opening in ("point [\n", "coordIndex [\n"):
        start = text.index(opening) + len(opening)
        spans.append((start, text.index("]", start) - 1))
    return spans


def mutate_vrml(data: bytes, kind: str, rng) -> bytes:
    text = data.decode()
    first_polygon = text.index("coordIndex [\n") + len("coordIndex [\n")
    first_point = text.index("point [\n") + len("point [\n")
    if kind == "truncate":
        end_of_shape = text.rindex("}", 0, text.index("DEF Tricorder_Camera"))
        return data[: int(rng.integers(1, end_of_shape))]
    if kind == "stray byte":
        start, end = _vrml_blocks(text)[int(rng.integers(2))]
        at = int(rng.integers(start, end))
        return (text[:at] + "x" + text[at + 1:]).encode()
    if kind == "two corners":
        line_end = text.index("\n", first_polygon)
        corners = text[first_polygon:line_end].split()
        return (text[:first_polygon] + " ".join(corners[:2] + ["-1,"]) + text[line_end:]).encode()
    if kind == "out of range":
        corners_end = text.index(" ", first_polygon)
        return (text[:first_polygon] + "99999999" + text[corners_end:]).encode()
    if kind in ("nan", "overflow"):
        value_end = text.index(" ", first_point)
        return (text[:first_point] + ("nan" if kind == "nan" else "1e39") + text[value_end:]).encode()
    if kind == "garbage":
        return bytes(rng.integers(0, 256, size=200, dtype=np.uint8))
    raise AssertionError(kind)


def mutate_obj(data: bytes, kind: str, rng) -> bytes:
    text = data.decode()
    first_face = text.index("\nf ") + 1
    face_end = text.index("\n", first_face)
    corners = text[first_face + 2:face_end].split()
    if kind == "truncate":
        return data[: int(rng.integers(1, len(data) - 1))]
    if kind == "stray byte":
        at = int(rng.integers(len(data)))
        while data[at:at + 1] == b"x":
            at = int(rng.integers(len(data)))
        return data[:at] + b"x" + data[at + 1:]
    if kind == "two corners":
        return (text[:first_face] + "f " + " ".join(corners[:2]) + text[face_end:]).encode()
    if kind == "index zero":
        return (text[:first_face] + "f " + " ".join(["0" + c[c.index("/"):] if "/" in c else "0" for c in corners[:1]]
                                                      + corners[1:]) + text[face_end:]).encode()
    if kind == "out of range":
        return (text[:first_face] + "f 99999999/1 " + " ".join(corners[1:]) + text[face_end:]).encode()
    if kind in ("nan", "overflow"):
        start = text.index("v ") + 2  # the x of the first vertex
        return (text[:start] + ("nan" if kind == "nan" else "1e39") + text[text.index(" ", start):]).encode()
    if kind == "garbage":
        return bytes(rng.integers(0, 256, size=200, dtype=np.uint8))
    raise AssertionError(kind)


def mutate_bnt(data: bytes, kind: str, rng) -> bytes:
    nrows, ncols, zmin, name_length = struct.unpack_from("<HHdH", data)
    offset = struct.calcsize("<HHdH") + name_length + 4
    plane = 8 * nrows * ncols
    if kind == "truncate":
        return data[: int(rng.integers(1, len(data) - 1))]
    if kind == "trailing bytes":
        return data + b"\0" * int(rng.integers(1, 64))
    if kind == "grid larger than file":
        return struct.pack("<HH", nrows + 1000, ncols) + data[4:offset - 4] \
            + struct.pack("<I", 5 * (nrows + 1000) * ncols) + data[offset:]
    if kind in ("nan", "overflow"):
        value = np.full(nrows * ncols, np.nan if kind == "nan" else 1e39, dtype="<f8").tobytes()
        return data[:offset] + value + data[offset + plane:]  # the whole X plane
    if kind == "texture outside":
        name = b"../../x.png"
        return struct.pack("<HHdH", nrows, ncols, zmin, len(name)) + name + data[offset - 4:]
    raise AssertionError(kind)


MUTATIONS = {
    ".wrl": (mutate_vrml, ["truncate", "truncate", "truncate", "stray byte", "stray byte", "two corners",
                           "out of range", "nan", "overflow", "garbage"]),
    ".obj": (mutate_obj, ["truncate", "truncate", "truncate", "stray byte", "stray byte", "two corners",
                          "index zero", "out of range", "nan", "overflow", "garbage"]),
    ".bnt": (mutate_bnt, ["truncate", "truncate", "trailing bytes", "grid larger than file", "nan", "overflow",
                          "texture outside"]),
}


@pytest.mark.parametrize("name", list(MESH_SUFFIXES))
def test_fuzz_corrupt_files_are_rejected_and_everything_is_accounted_for(pristine, tmp_path, name):
    root = fresh(pristine, tmp_path, name)
    rng = np.random.default_rng(sum(map(ord, name)))
    meshes = mesh_files(root, name)
    suffix = meshes[0].suffix
    mutate, kinds = MUTATIONS[suffix]
    order = rng.permutation(len(meshes))
    assert len(meshes) >= len(kinds) + 5, "fixture too small for every mutation"
    corrupted = {}
    for kind, k in zip(kinds, order):
        path = meshes[k]
        path.write_bytes(mutate(path.read_bytes(), kind, rng))
        corrupted[str(path)] = kind
    # the file system's own hazards: a FIFO and a /dev/zero link named like scans
    spare = [meshes[k] for k in order[len(kinds):]]
    fifo, device = spare[0], spare[1]
    fifo.unlink()
    os.mkfifo(fifo)
    device.unlink()
    device.symlink_to("/dev/zero")
    corrupted[str(fifo)], corrupted[str(device)] = "fifo", "link to /dev/zero"
    # an upper-case extension is a valid scan, not a skip
    shouted = spare[2].with_suffix(suffix.upper())
    spare[2].rename(shouted)
    valid = {str(p) for p in meshes if str(p) not in corrupted and p != spare[2]} | {str(shouted)}
    # names that are not UTF-8 (old Windows copies): listed with escapes, never a crash
    (root / os.fsdecode(b"caf\xe9.txt")).write_text("notes")
    if name == "bosphorus":
        odd = root / "BosphorusDB" / "bs000" / os.fsdecode(b"bs000_E_\xe9_0.bnt")
        shutil.copy(spare[4], odd)
        corrupted[shown_path(str(odd))] = "name not UTF-8"
    # a damaged landmark file costs its own row, never its scan
    landmarks = landmark_file(root, name, spare[3])
    if landmarks is not None:
        landmarks.write_bytes(landmarks.read_bytes()[: len(landmarks.read_bytes()) // 2])

    manifest, rejects, skipped = index_dataset(name, root, {"validate": "full"})

    reasons = dict(zip(rejects["path"], rejects["reason"]))
    missed = {path: kind for path, kind in corrupted.items() if path not in reasons}
    assert not missed, f"corrupt files not rejected: {missed}"
    assert set(manifest["mesh_path"]) == valid
    if landmarks is not None:
        assert str(landmarks) in reasons and str(spare[3]) in set(manifest["mesh_path"])
        assert manifest.set_index("mesh_path").loc[str(spare[3]), "landmark_path"] == ""
    assert "not a regular file (a FIFO)" in reasons[str(fifo)]
    if name == "bosphorus":
        assert reasons[shown_path(str(odd))] == "file name is not valid UTF-8; rename it"
    assert "outside the dataset root" in reasons[str(device)]
    assert_accounted(root, manifest, rejects, skipped, used=[root / SHEET] if name == "4dme" else [])


@pytest.mark.parametrize("name", ["bu4dfe", "bp4d", "4dme"])
def test_fuzz_sampled_validation_never_lets_rendering_read_a_corrupt_frame(pristine, tmp_path, name):
    # validate: sampled parses only the frames rendering picks (here 2 per sequence), so a
    # corrupt frame may stay in the manifest, but only where no rendering reads it.
    root = fresh(pristine, tmp_path, name)
    rng = np.random.default_rng(sum(map(ord, name)) + 1)
    meshes = mesh_files(root, name)
    mutate, kinds = MUTATIONS[meshes[0].suffix]
    order = rng.permutation(len(meshes))
    corrupted = {}
    for kind, k in zip(kinds, order):
        meshes[k].write_bytes(mutate(meshes[k].read_bytes(), kind, rng))
        corrupted[str(meshes[k])] = kind
    fifo = meshes[order[len(kinds)]]
    fifo.unlink()
    os.mkfifo(fifo)
    corrupted[str(fifo)] = "fifo"
    valid = {str(p) for p in meshes} - set(corrupted)

    manifest, rejects, skipped = index_dataset(name, root, {"validate": "sampled", "frames": 2})

    assert valid <= set(manifest["mesh_path"])
    assert "not a regular file (a FIFO)" in dict(zip(rejects["path"], rejects["reason"]))[str(fifo)]
    rendered = set()
    for _, sample in manifest.groupby("sample_id"):
        sample = sample.sort_values("frame", kind="stable")
        rendered.update(sample["mesh_path"].iloc[sample_frames(len(sample), 2)])
    assert not rendered & set(corrupted), "rendering would read a corrupt frame"
    for path in rendered:
        read_mesh(path)
    assert set(rejects["path"]) & set(corrupted), "no corrupt frame was rejected at all"
    assert_accounted(root, manifest, rejects, skipped, used=[root / SHEET] if name == "4dme" else [])


def test_fuzz_every_obj_truncation_is_rejected(pristine, tmp_path):
    # OBJ has no closing bracket, so a cut inside a line is caught by the missing end of line,
    # and a cut on a line boundary of the face list by the vertices it leaves unused. The one
    # cut no reader can see: dropping whole faces whose vertices all have other faces.
    source = mesh_files(pristine / "bp4d", "bp4d")[0].read_bytes()
    line_ends = [m.end() for m in re.finditer(rb"\n", source)]
    inside_lines = set(np.random.default_rng(3).integers(1, len(source) - 1, size=150).tolist()) - set(line_ends)
    path = tmp_path / "0001.obj"
    for cut in sorted(inside_lines) + line_ends[-60:-1]:
        path.write_bytes(source[:cut])
        kept = source[:cut].decode()
        vertices = kept.count("\nv ") + kept.startswith("v ")
        used = {int(c.split("/")[0]) for line in kept.splitlines() if line.startswith("f ") for c in line.split()[1:]}
        if cut in line_ends and "\nf " in kept and used == set(range(1, vertices + 1)):
            read_mesh(path)  # undetectable, and indeed accepted as a smaller mesh
            continue
        with pytest.raises(ScanError):
            read_mesh(path)


def test_fuzz_4dme_sheet_cells(pristine, tmp_path):
    root = fresh(pristine, tmp_path, "4dme")
    sheet = pd.read_excel(root / SHEET, dtype=object)
    bad = {0: ("Positive", "x"), 1: ("Negative", -1), 2: ("Surprise", 0.5), 3: ("Apex", 10**6)}
    for row, (column, value) in bad.items():
        sheet.loc[row, column] = value
    writers.write_4dme_xlsx(root / SHEET, sheet.to_dict("records"))
    manifest, rejects, skipped = index_dataset("4dme", root, {"validate": "full"})
    sheet_rows = rejects.loc[rejects["path"] == str(root / SHEET), "reason"].tolist()
    assert [int(re.match(r"row (\d+)", r).group(1)) for r in sheet_rows] == [2, 3, 4, 5]
    assert "'x' is not 0 or 1" in sheet_rows[0] and "-1 is not 0 or 1" in sheet_rows[1]
    assert "0.5 is not 0 or 1" in sheet_rows[2] and "outside onset..offset" in sheet_rows[3]
    rejected_clips = {f"{sheet.loc[r, 'sub_ID']}_{sheet.loc[r, 'fold_name']}" for r in bad}
    assert not rejected_clips & set(manifest["sample_id"])
    assert manifest["sample_id"].nunique() == len(sheet) - len(bad)
    assert_accounted(root, manifest, rejects, skipped, used=[root / SHEET])


# ----------------------------------------------------------------------------- special files


def test_fifo_named_like_a_scan_is_rejected_without_blocking(tmp_path):
    scan = tmp_path / "F0001" / "F0001_AN01WH_F3D.wrl"
    write_vrml(tmp_path / "F0001" / "F0001_HA01WH_F3D.wrl")
    os.mkfifo(scan)
    for validate in ("full", "header"):
        manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": validate})
        assert rejects.to_dict("records") == [
            {"path": str(scan), "reason": "not a regular file (a FIFO); only regular files are read"}]
        assert manifest["sample_id"].tolist() == ["F0001_HA01WH"]
    with pytest.raises(ScanError, match="a FIFO"):
        read_mesh(scan)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_link_is_rejected_without_reading(tmp_path):
    scan = tmp_path / "F0001" / "F0001_AN01WH_F3D.wrl"
    write_vrml(tmp_path / "F0001" / "F0001_HA01WH_F3D.wrl")
    scan.symlink_to("/dev/zero")
    manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    assert rejects["path"].tolist() == [str(scan)]
    assert "link to /dev/zero, outside the dataset root" in rejects["reason"].iloc[0]
    with pytest.raises(ScanError, match="a character device"):
        read_mesh(scan)  # even without the index's link check, the reader refuses it
    assert_accounted(tmp_path, manifest, rejects, skipped)


def test_link_inside_the_root_is_read(tmp_path):
    write_vrml(tmp_path / "F0001" / "F0001_HA01WH_F3D.wrl")
    (tmp_path / "F0001" / "F0001_HA02WH_F3D.wrl").symlink_to("F0001_HA01WH_F3D.wrl")
    (tmp_path / "F0002").symlink_to("F0001")  # folder links are listed, never followed
    manifest, rejects, skipped = index_dataset("bu3dfe", tmp_path, {"validate": "full"})
    assert manifest["sample_id"].tolist() == ["F0001_HA01WH", "F0001_HA02WH"] and rejects.empty
    assert skipped.to_dict("records") == [
        {"path": str(tmp_path / "F0002"), "reason": "link to a folder: links to folders are not followed"}]


def test_huge_sparse_bnt_is_rejected_before_allocation(tmp_path):
    # 640 MB on paper, a few KB on disk: a consistent header over a hole.
    path = tmp_path / "BosphorusDB" / "bs000" / "bs000_N_N_0.bnt"
    write_bnt(path)
    nrows, ncols, name = 4000, 4000, b"bs000_N_N_0.png"
    header = struct.pack("<HHdH", nrows, ncols, -1e9, len(name)) + name + struct.pack("<I", 5 * nrows * ncols)
    with open(path, "wb") as stream:
        stream.write(header)
        stream.truncate(len(header) + 8 * 5 * nrows * ncols)
    assert path.stat().st_size > 600 * 2**20
    manifest, rejects, _ = index_dataset("bosphorus", tmp_path, {"validate": "full"})
    assert manifest.empty
    assert re.fullmatch(r"file is 61\d\.\d MB, over the 64 MB per-file limit \(index\.max_file_mb\)",
                        rejects["reason"].iloc[0])
    # a grid declared larger than the file is refused from the header alone
    path.write_bytes(header + b"\0" * 80)
    with pytest.raises(ScanError, match="header implies"):
        read_bnt(path, max_bytes=2**40)


def test_max_file_mb_is_a_setting(tmp_path):
    write_vrml(tmp_path / "F0001" / "F0001_HA01WH_F3D.wrl")
    size = (tmp_path / "F0001" / "F0001_HA01WH_F3D.wrl").stat().st_size
    manifest, rejects, _ = index_dataset("bu3dfe", tmp_path, {"max_file_mb": size / 2**20 / 2})
    assert manifest.empty and "per-file limit" in rejects["reason"].iloc[0]
    manifest, rejects, _ = index_dataset("bu3dfe", tmp_path, {"max_file_mb": size / 2**20 * 2})
    assert len(manifest) == 1 and rejects.empty
