"""Broken, truncated, hostile input: every reader raises ScanError naming the file, nothing else."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from conftest_readers import (
    LM2_TEXT,
    LM3_TEXT,
    POLY_POLYGONS,
    POLY_UV_POLYGONS,
    POLY_UVS,
    POLY_VERTICES,
    bnt_bytes,
    bnt_grid,
    vrml_text,
    write_4dme_xlsx,
    write_bnd,
    write_bnt,
    write_vrml,
)
from smile_vlm.errors import ScanError
from smile_vlm.readers import read_mesh
from smile_vlm.readers.bnd import read_bnd
from smile_vlm.readers.bosphorus import read_bnt, read_lm2, read_lm3
from smile_vlm.readers.fourdme import read_annotations
from smile_vlm.readers.obj import read_obj
from smile_vlm.readers.sanity import check_geometry, check_landmarks_on
from smile_vlm.readers.vrml import parse_vrml

GOOD_VRML = vrml_text(POLY_VERTICES, POLY_POLYGONS, POLY_UVS, POLY_UV_POLYGONS, url=None)


def raises_for(path, call, match):
    with pytest.raises(ScanError, match=match) as info:
        call(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


# ----------------------------------------------------------------------------- VRML


def test_every_truncation_inside_the_shape_is_rejected(tmp_path):
    path = tmp_path / "cut.wrl"
    end_of_shape = GOOD_VRML.rindex("}", 0, GOOD_VRML.index("DEF Tricorder_Camera"))
    for cut in range(end_of_shape):
        with pytest.raises(ScanError) as info:
            parse_vrml(GOOD_VRML[:cut], path)
        assert info.value.path == str(path), cut


@pytest.mark.parametrize(
    "old, new, reason",
    [
        ("1 1 0,", "1 nan 0,", "non-finite .* vertex"),
        ("2 2 0,", "2 inf 0,", "non-finite .* vertex"),
        ("0.3 0.85", "0.3 -inf", "non-finite .* texture"),
        ("1 4 2\n", "1 4 7\n", "coordIndex refers to index 7 but there are only 7 vertices"),
        ("9 1 5\n", "10 1 5\n", "texCoordIndex refers to index 10 but there are only 10"),
        ("4 5 6 7 8 -1", "4 5 6 7 -1, 8", "polygon structure"),
        ("1 4 2\n", "1 4 -1\n", "polygon with 2 corners"),
        ("3 2 4 5 6 -1", "3 2 -4 5 6 -1", "negative index -4"),
        ("1 1 0,", "1 1 zero,", "coord point block holds something other than numbers"),
        ("1 4 2\n", "1 4 2.5\n", "coordIndex block holds something other than integers"),
        ("0 2 0\n", "0 2\n", "not x y z triples"),
        ("#VRML V2.0 utf8", "#VRML V1.0 ascii", "unsupported VRML version"),
        ("#VRML V2.0 utf8", "#Inventor V2.1", "no '#VRML' header"),
    ],
)
def test_corrupted_values_are_rejected(tmp_path, old, new, reason):
    assert old in GOOD_VRML
    path = tmp_path / "bad.wrl"
    path.write_text(GOOD_VRML.replace(old, new, 1))
    raises_for(path, read_mesh, reason)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "no '#VRML' header"),
        (b"#VRML V2.0 utf8\n", "no vertices"),
        (b"#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ ] } } }", "no vertices"),
        (b"#VRML V2.0 utf8\ncoord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }", "no polygons"),
        (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "no '#VRML' header"),
    ],
)
def test_empty_and_garbage_files(tmp_path, content, reason):
    path = tmp_path / "x.wrl"
    path.write_bytes(content)
    raises_for(path, read_mesh, reason)


def test_random_text_after_a_vrml_header_never_crashes(tmp_path):
    # Seeded, so a failure reproduces; tokens drawn from VRML's own vocabulary make the
    # parser reach its block and index logic instead of failing on the first byte.
    rng = np.random.default_rng(0)
    vocabulary = ["coord", "Coordinate", "{", "}", "point", "[", "]", "coordIndex", "texCoord",
                  "TextureCoordinate", "texCoordIndex", "-1", "0", "1", "2", "1e400", ",", "#", "url", '"']
    for _ in range(300):
        junk = " ".join(rng.choice(vocabulary, size=rng.integers(0, 40)))
        with pytest.raises(ScanError):
            parse_vrml("#VRML V2.0 utf8\n" + junk, tmp_path / "junk.wrl")


def test_single_character_mutations_give_a_mesh_or_a_scan_error(tmp_path):
    rng = np.random.default_rng(1)
    for _ in range(400):
        position = int(rng.integers(len(GOOD_VRML)))
        character = str(rng.choice(list("x-,[]{}#\"9 .")))
        text = GOOD_VRML[:position] + character + GOOD_VRML[position + 1 :]
        try:
            mesh = parse_vrml(text, tmp_path / "m.wrl")
        except ScanError:
            continue
        # Whatever survives must be internally consistent.
        assert mesh.faces.min() >= 0 and mesh.faces.max() < mesh.n_vertices
        if mesh.face_uv is not None:
            assert mesh.face_uv.max() < len(mesh.uv)
        assert np.isfinite(mesh.vertices).all()


@pytest.mark.parametrize("url", ["../x.bmp", "sub/../../x.bmp", "..\\x.bmp"])
def test_texture_url_with_dotdot_is_rejected_even_if_the_file_exists(tmp_path, url):
    scan_dir = tmp_path / "F0001"
    (tmp_path / "x.bmp").write_bytes(b"outside")
    path = write_vrml(scan_dir / "a.wrl", url=url, texture=False)
    raises_for(path, read_mesh, r"leaves the scan folder")


@pytest.mark.parametrize("url", ["/textures/x.bmp", "C:\\data\\x.bmp", "\\\\server\\share\\x.bmp"])
def test_absolute_texture_url_is_rejected(tmp_path, url):
    path = write_vrml(tmp_path / "a.wrl", url=url, texture=False)
    raises_for(path, read_mesh, "is absolute")


def test_texture_symlink_pointing_outside_is_rejected(tmp_path):
    outside = tmp_path / "secret.bmp"
    outside.write_bytes(b"outside")
    scan_dir = tmp_path / "scan"
    path = write_vrml(scan_dir / "a.wrl", url="tex.bmp", texture=False)
    (scan_dir / "tex.bmp").symlink_to(outside)
    raises_for(path, read_mesh, "links outside the scan folder")


def test_unreadable_and_unsupported_paths(tmp_path):
    raises_for(tmp_path / "missing.wrl", read_mesh, "cannot read")
    (tmp_path / "a.ply").write_text("ply")
    raises_for(tmp_path / "a.ply", read_mesh, "unsupported mesh extension")


# ----------------------------------------------------------------------------- OBJ


@pytest.mark.parametrize(
    "content, reason",
    [
        ("", "no faces"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
        ("v 0 0 0\nv 1 0 0\nf 1 2 7\n", "line 3: vertex index 7 but there are only 2"),
        ("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "non-finite"),
        ("v 0 0 inf\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "non-finite"),
        ("v 0 0 1e39\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "1e\\+39 does not fit in float32"),
        ("this is not an obj file\n\x00\x01", "no end of line"),
        ("this is not an obj file\nf 1 2 3\n", "line 1: unknown statement 'this'"),
        # what trimesh used to let through: a cut last line, two corners, index 0, a bad token
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3", "line 4 has no end of line"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2\n", "line 5: face with 2 corners"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "line 4: vertex index 0 \\(OBJ indices start at 1\\)"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -1 -2 -3\n", "line 4: relative"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 x 3\n", "line 5: face with a non-integer index"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1/1 2/2 3/3\n", "line 5: face corner '1/1' has another form"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\n", "line 4: vertex used by no face"),
        ("v 0 0 0\nv 1 0 zero\nv 0 1 0\nf 1 2 3\n", "line 2: 'v' with a non-numeric value"),
        ("v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", "line 2: 'v' with 2 numbers"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/2 3/3\n", "line 5: texture coordinate index 2 but there are only 1"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nfx 1 2 3\nf 1 2 3\n", "line 4: unknown statement 'fx'"),
    ],
)
def test_broken_obj(tmp_path, content, reason):
    path = tmp_path / "0001.obj"
    path.write_text(content)
    raises_for(path, read_obj, reason)


def test_obj_material_outside_the_folder_is_rejected(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd tex.jpg\n")
    path = tmp_path / "scan" / "0001.obj"
    path.parent.mkdir()
    path.write_text("mtllib ../m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    raises_for(path, read_obj, "leaves the scan folder")


def test_obj_missing_texture_only_fails_when_required(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd 0001.jpg\n")
    path = tmp_path / "0001.obj"
    path.write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert read_obj(path).texture is None
    raises_for(path, lambda p: read_obj(p, require_texture=True), "texture '0001.jpg' not found")


# ----------------------------------------------------------------------------- BNT


def test_bnt_truncated_or_padded_is_rejected(tmp_path):
    data = (write_bnt(tmp_path / "ok.bnt")).read_bytes()
    for name, content in [("short.bnt", data[:-8]), ("long.bnt", data + b"\0"), ("tiny.bnt", data[:10])]:
        (tmp_path / name).write_bytes(content)
        raises_for(tmp_path / name, read_bnt, "truncated|file size")


def test_bnt_value_count_must_match_the_grid(tmp_path):
    xyz, uv = bnt_grid()
    data = bytearray(bnt_bytes(xyz, uv, "a.png"))
    count_at = struct.calcsize("<HHdH") + len("a.png")
    data[count_at : count_at + 4] = struct.pack("<I", 5 * 12 - 5)
    path = tmp_path / "a.bnt"
    path.write_bytes(bytes(data[:-40]))
    raises_for(path, read_bnt, r"value count 55 != 5 \* 3 \* 4")


def test_bnt_nan_at_a_valid_point_is_rejected_but_background_is_ignored(tmp_path):
    xyz, uv = bnt_grid()
    background = xyz.copy()
    background[0, 3, 0] = np.nan  # X of a background point: never used
    (tmp_path / "ok.bnt").write_bytes(bnt_bytes(background, uv, "ok.png"))
    assert read_bnt(tmp_path / "ok.bnt").valid.sum() == 9
    xyz[1, 1, 1] = np.inf
    (tmp_path / "bad.bnt").write_bytes(bnt_bytes(xyz, uv, "bad.png"))
    raises_for(tmp_path / "bad.bnt", read_bnt, "non-finite")


def test_bnt_with_no_valid_point_has_no_mesh(tmp_path):
    xyz, uv = bnt_grid()
    xyz[...] = -1e9
    (tmp_path / "empty.bnt").write_bytes(bnt_bytes(xyz, uv, "empty.png"))
    raises_for(tmp_path / "empty.bnt", read_mesh, "only 0 valid grid points")


@pytest.mark.parametrize("name, reason", [("../a.png", "leaves the scan folder"), ("/textures/a.png", "is absolute")])
def test_bnt_texture_name_outside_is_rejected(tmp_path, name, reason):
    path = write_bnt(tmp_path / "bs000_N_N_0.bnt", texture=False, name=name)
    raises_for(path, read_mesh, reason)


def test_bnt_missing_texture_only_fails_when_required(tmp_path):
    path = write_bnt(tmp_path / "bs000_N_N_0.bnt", texture=False)
    assert read_mesh(path).texture is None
    raises_for(path, lambda p: read_mesh(p, require_texture=True), "not found")


# ----------------------------------------------------------------------------- landmarks


def test_bnd_wrong_row_count_and_garbage(tmp_path):
    raises_for(write_bnd(tmp_path / "a.bnd", n=82), read_bnd, "82 landmark rows, expected 83")
    path = write_bnd(tmp_path / "b.bnd")
    path.write_text(path.read_text().replace("10\t\t1.000000", "10\t\tone", 1))
    raises_for(path, read_bnd, "non-numeric")
    path.write_text(write_bnd(tmp_path / "c.bnd").read_text().replace("0.500000", "nan", 1))
    raises_for(path, read_bnd, "non-finite")
    path.write_text("1 2 3\n" * 83)
    raises_for(path, read_bnd, "row 1 has 3 fields")
    raises_for(tmp_path / "none.bnd", read_bnd, "cannot read")


@pytest.mark.parametrize(
    "old, new, reason",
    [
        ("3 landmarks:", "4 landmarks:", "announces 4 landmarks"),
        ("3 landmarks:", "three landmarks:", "'<N> landmarks' line"),
        ("0.5 -1.25 40", "0.5 -1.25", "has 2 coordinates"),
        ("0.5 -1.25 40", "0.5 nan 40", "non-finite"),
        ("0.5 -1.25 40", "1e39 -1.25 40", "value 1e\\+39 does not fit in float32"),  # inf once stored
        ("Chin middle", "Nose tip", "appears twice"),
        ("# 3D Landmark File", "3D Landmark File", "comment line"),
    ],
)
def test_broken_lm3(tmp_path, old, new, reason):
    path = tmp_path / "a.lm3"
    path.write_bytes(LM3_TEXT.replace(old, new, 1).encode())
    raises_for(path, read_lm3, reason)


def test_broken_lm2(tmp_path):
    path = tmp_path / "a.lm2"
    path.write_bytes(LM2_TEXT.replace("515.5 1300\r\n", "").encode())
    raises_for(path, read_lm2, "announces 2 landmarks")
    path.write_bytes(LM2_TEXT.replace("Labels:", "Names:").encode())
    raises_for(path, read_lm2, "missing 'Labels:'")


def test_second_indexed_face_set_and_orphan_texcoordindex_are_rejected(tmp_path):
    shape = GOOD_VRML[GOOD_VRML.index("    Shape {") : GOOD_VRML.index("  ]\n}")]
    path = tmp_path / "two.wrl"
    path.write_text(GOOD_VRML.replace(shape, shape + shape, 1))
    raises_for(path, read_mesh, "several IndexedFaceSets")
    start = GOOD_VRML.index("        texCoord TextureCoordinate")
    path.write_text(GOOD_VRML[:start] + GOOD_VRML[GOOD_VRML.index("        texCoordIndex") :])
    raises_for(path, read_mesh, "texCoordIndex without a texCoord block")


def test_a_flood_of_brackets_is_refused_not_walked(tmp_path):
    # blocks are found by their '[': a file of nothing else must not cost a step per bracket
    with pytest.raises(ScanError, match=r"over 4096 '\['"):
        parse_vrml("#VRML V2.0 utf8\n" + "[" * 1_000_000, tmp_path / "flood.wrl")


# ----------------------------------------------------------------------------- values that parse but are no face


def test_obj_without_vertex_lines_names_the_reason(tmp_path):
    path = tmp_path / "0001.obj"
    path.write_text("f 1 2 3\nf 1 3 4\n")
    raises_for(path, read_mesh, r"no vertices \(no 'v' lines\)")


def test_bnt_with_rows_and_columns_swapped_is_refused(tmp_path):
    # a regular 6 x 10 grid; the swapped header has the same size, so only the spacing tells
    rows, cols = np.mgrid[0:6, 0:10].astype(float)
    xyz = np.stack([cols, -rows, 50 - 0.1 * (cols - 5) ** 2], axis=-1)
    uv = np.stack([cols / 10, rows / 6], axis=-1)
    path = tmp_path / "bs000_N_N_0.bnt"
    data = bnt_bytes(xyz, uv, "", zmin=-1e9)
    path.write_bytes(data)
    assert len(read_mesh(path).faces) == 2 * 5 * 9
    path.write_bytes(struct.pack("<HH", 10, 6) + data[4:])
    raises_for(path, read_bnt, "the header's 10 rows and 6 columns look swapped")


def _on_disk(tmp_path, vertices) -> tuple:
    path = tmp_path / "scan.wrl"
    path.write_text(vrml_text(vertices, POLY_POLYGONS, POLY_UVS, POLY_UV_POLYGONS, url=None))
    return read_mesh(path), path


@pytest.mark.parametrize("vertices, reason", [
    ([(1.5, 2.0, -3.0)] * 7, r"degenerate geometry: 1 distinct vertex position\(s\)"),
    ([(0, 0, 0), (1, 0, 0), (0, 1, 0)] * 2 + [(0, 0, 0)], r"degenerate geometry: 3 distinct vertex position\(s\)"),
    ([(x, 0, 0) for x in range(7)], "0 of 6 faces have an area"),
    ([*POLY_VERTICES[:6], (0, 1e30, 0)], "vertex coordinate 1e\\+30 is beyond any scanner's extent"),
])
def test_a_mesh_that_parses_but_is_no_surface_is_refused(tmp_path, vertices, reason):
    mesh, path = _on_disk(tmp_path, vertices)  # every one of these parses
    with pytest.raises(ScanError, match=reason) as info:
        check_geometry(mesh, path)
    assert info.value.path == str(path)
    check_geometry(_on_disk(tmp_path, POLY_VERTICES)[0], path)  # the fixture itself passes


def test_landmarks_must_index_the_mesh_and_lie_on_it(tmp_path):
    mesh, _ = _on_disk(tmp_path, POLY_VERTICES)
    on_mesh = np.array(POLY_VERTICES, dtype=float)
    path = write_bnd(tmp_path / "a.bnd", on=POLY_VERTICES)
    indices, xyz = read_bnd(path)
    check_landmarks_on(mesh, xyz, path, indices=indices)
    bad = indices.copy()
    bad[4] = 99999999
    with pytest.raises(ScanError, match="row 5: vertex index 99999999 but the scan has only 7 vertices"):
        check_landmarks_on(mesh, xyz, path, indices=bad)
    far = on_mesh + [0, 0, 1]  # 1 mm off a 2.8 mm wide mesh
    with pytest.raises(ScanError, match="'Chin': landmark 1 from the nearest vertex .* not on this scan"):
        check_landmarks_on(mesh, far[:1], path, labels=["Chin"])
    with pytest.raises(ScanError, match="row 1: non-finite"):
        check_landmarks_on(mesh, np.array([[np.inf, 0, 0]]), path)
    check_landmarks_on(mesh, on_mesh + [0, 0, 0.1], path)  # within 5 % of the size: on the scan


# ----------------------------------------------------------------------------- the 4DME label sheet


def test_4dme_sheet_is_read_like_a_scan(tmp_path):
    rows = [["S01", "c", 1, 1, 2, 3, "AU12", "Positive", 0, 1, 0, 0, 0, 0]]
    sheet = write_4dme_xlsx(tmp_path / "ann.xlsx", rows)
    assert len(read_annotations(sheet)) == 1
    size = sheet.stat().st_size
    raises_for(sheet, lambda p: read_annotations(p, max_bytes=size - 1), "over the .* per-file limit")
    # a few KB of zip that unpack past the limit are refused from the zip's directory
    raises_for(sheet, lambda p: read_annotations(p, max_bytes=size + 1), r"workbook unpacks to .* per-file limit")
    fifo = tmp_path / "fifo.xlsx"
    os.mkfifo(fifo)
    raises_for(fifo, read_annotations, r"not a regular file \(a FIFO\)")
    if os.path.exists("/dev/zero"):
        zero = tmp_path / "zero.xlsx"
        zero.symlink_to("/dev/zero")
        raises_for(zero, read_annotations, r"not a regular file \(a character device\)")
    text = tmp_path / "text.xlsx"
    text.write_text("sub_ID,fold_name\n")
    raises_for(text, read_annotations, r"not an .xlsx \(zip\) file")
