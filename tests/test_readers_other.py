"""OBJ, .bnd, Bosphorus (.bnt/.lm3/.lm2), 4DME annotations and name parsers on known contents."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ict_data import ICT_DIR
from conftest_readers import FOURDME_COLUMNS, BNT_VALID, LM2_TEXT, LM3_TEXT, write_4dme_xlsx, write_bnd, write_bnt
from smile_vlm.errors import ScanError
from smile_vlm.readers import read_mesh
from smile_vlm.readers.bnd import read_bnd
from smile_vlm.readers.bosphorus import bnt_to_mesh, read_bnt, read_lm2, read_lm3
from smile_vlm.readers.fourdme import read_annotations
from smile_vlm.readers.names import (
    CLASSES,
    frame_number,
    parse_bosphorus_name,
    parse_bu3dfe_name,
)

# ----------------------------------------------------------------------------- OBJ

OBJ_TEXT = """# quad + triangle; vertex 1 carries UV 1 in the quad and UV 5 in the triangle
mtllib face.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vt 0.5 0.5
f 1/1 2/2 3/3 4/4
f 1/5 3/3 4/4
"""


def test_obj_keeps_per_corner_uvs_and_resolves_map_kd(tmp_path):
    (tmp_path / "face.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd 0001.jpg\n")
    (tmp_path / "0001.jpg").write_bytes(b"jpeg")
    path = tmp_path / "0001.obj"
    path.write_text(OBJ_TEXT)
    mesh = read_mesh(path)
    corners = mesh.vertices[mesh.faces]
    corner_uv = mesh.uv[mesh.face_uv]
    expected = [  # (corner positions, their uvs) per triangle of the fan-triangulated input, in file order
        (((0, 0, 0), (1, 0, 0), (1, 1, 0)), ((0, 0), (1, 0), (1, 1))),
        (((0, 0, 0), (1, 1, 0), (0, 1, 0)), ((0, 0), (1, 1), (0, 1))),
        (((0, 0, 0), (1, 1, 0), (0, 1, 0)), ((0.5, 0.5), (1, 1), (0, 1))),
    ]
    got = [(tuple(map(tuple, c.tolist())), tuple(map(tuple, u.tolist()))) for c, u in zip(corners, corner_uv)]
    assert got == expected
    assert mesh.texture == tmp_path / "0001.jpg"


def test_obj_without_uv_or_material(tmp_path):
    path = tmp_path / "0002.obj"
    path.write_text("v 0 0 0\nv 2 0 0\nv 0 2 0\nv 2 2 1\nf 1 2 3\nf 2 4 3\n")
    mesh = read_mesh(path)
    assert mesh.uv is None and mesh.face_uv is None and mesh.texture is None
    assert mesh.faces.tolist() == [[0, 1, 2], [1, 3, 2]]
    np.testing.assert_array_equal(mesh.vertices[3], [2, 2, 1])


# ----------------------------------------------------------------------------- .bnd


@pytest.mark.parametrize("separator", ["\t\t", " ", "\t"])
def test_bnd_rows_with_any_whitespace_and_blank_lines(tmp_path, separator):
    indices, xyz = read_bnd(write_bnd(tmp_path / "F0001_AN01WH_F3D.bnd", separator=separator))
    assert indices.dtype == np.int64 and xyz.dtype == np.float32
    assert indices.shape == (83,) and xyz.shape == (83, 3)
    assert indices[[0, 1, 82]].tolist() == [0, 10, 820]
    np.testing.assert_allclose(xyz[82], [82, -82, 41])


def test_bnd_custom_row_count(tmp_path):
    indices, _ = read_bnd(write_bnd(tmp_path / "a.bnd", n=8), n_expected=8)
    assert indices.tolist() == [0, 10, 20, 30, 40, 50, 60, 70]


# ----------------------------------------------------------------------------- .bnt


def test_bnt_mask_flip_and_uv(tmp_path):
    scan = read_bnt(write_bnt(tmp_path / "bs000_E_HAPPY_0.bnt"))
    assert scan.texture_name == "bs000_E_HAPPY_0.png"
    assert scan.zmin == -1e9
    np.testing.assert_array_equal(scan.valid, BNT_VALID)
    # Rows come back top-first: row 0 has the largest y, Z = 10 + 10 row + col.
    np.testing.assert_array_equal(scan.xyz[0, 0], [0, 2, 10])
    np.testing.assert_array_equal(scan.xyz[2, 3], [3, 0, 33])
    np.testing.assert_allclose(scan.uv[2, 1], [0.35, 2 / 3 + 0.05])


def test_bnt_triangulation_only_over_valid_points(tmp_path):
    path = write_bnt(tmp_path / "bs000_E_HAPPY_0.bnt")
    mesh = bnt_to_mesh(read_bnt(path), path)
    # Valid points in row-major order: (0,0)..(0,2) -> 0..2, (1,0)..(1,2) -> 3..5, (2,1)..(2,3) -> 6..8.
    assert mesh.n_vertices == 9
    np.testing.assert_array_equal(mesh.vertices[6], [1, 0, 31])
    expected = {
        (0, 3, 4), (0, 4, 1),  # cell (0,0): 4 valid
        (1, 4, 5), (1, 5, 2),  # cell (0,1): 4 valid
        (3, 6, 4),             # cell (1,0): bottom-left missing
        (4, 6, 7), (4, 7, 5),  # cell (1,1): 4 valid
        (5, 7, 8),             # cell (1,2): top-right missing; cell (0,2) has 2 valid -> none
    }
    assert {tuple(face) for face in mesh.faces.tolist()} == expected
    assert mesh.n_faces == len(expected)
    # Counter-clockwise seen from +z, the direction the face looks.
    a, b, c = (mesh.vertices[mesh.faces[:, k], :2] for k in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (cross > 0).all()
    # UV flipped to the bottom-left origin: v = 1 - (row / 3 + 0.05).
    np.testing.assert_allclose(mesh.uv[6], [0.35, 1 - (2 / 3 + 0.05)], atol=1e-6)
    assert mesh.face_uv.tolist() == mesh.faces.tolist()
    assert mesh.texture == tmp_path / "bs000_E_HAPPY_0.png"


# ----------------------------------------------------------------------------- .lm3 / .lm2


def test_lm3_crlf_label_keyed(tmp_path):
    path = tmp_path / "bs000_E_HAPPY_0.lm3"
    path.write_bytes(LM3_TEXT.encode())
    landmarks = read_lm3(path)
    assert list(landmarks) == ["Outer left eyebrow", "Nose tip", "Chin middle"]
    np.testing.assert_allclose(landmarks["Outer left eyebrow"], [-90.275, 13.1, -6.515], rtol=1e-6)
    np.testing.assert_allclose(landmarks["Nose tip"], [0.5, -1.25, 40])


def test_lm3_with_star_info_block(tmp_path):
    text = LM3_TEXT.replace("\r\n\r\n3 landmarks:", "\r\n*\r\nscanned 2008\r\noperator X\r\n\r\n3 landmarks:")
    path = tmp_path / "a.lm3"
    path.write_bytes(text.encode())
    np.testing.assert_allclose(read_lm3(path)["Chin middle"], [1, -60, 10])


def test_lm2_crlf_label_keyed(tmp_path):
    path = tmp_path / "bs000_E_HAPPY_0.lm2"
    path.write_bytes(LM2_TEXT.encode())
    landmarks = read_lm2(path)
    assert list(landmarks) == ["Nose tip", "Chin middle"]
    np.testing.assert_allclose(landmarks["Chin middle"], [515.5, 1300])


# ----------------------------------------------------------------------------- names


def test_bu3dfe_names():
    parsed = parse_bu3dfe_name("F0001_AN01WH_F3D.wrl")
    assert (parsed.subject, parsed.sex, parsed.label, parsed.intensity, parsed.race, parsed.kind, parsed.base) == (
        "F0001", "F", "anger", 1, "WH", "F3D", "F0001_AN01WH",
    )
    neutral = parse_bu3dfe_name("M0044_NE00LA_F3D.bnd")
    assert (neutral.label, neutral.intensity, neutral.sex) == ("neutral", 0, "M")
    for bad in ["F0001_NE01WH_F3D.wrl", "F0001_HA00WH_F3D.wrl", "F0001_HA05WH_F3D.wrl", "F001_HA01WH_F3D.wrl",
                "F0001_XX01WH_F3D.wrl", "f0001_AN01WH_F3D.wrl"]:
        with pytest.raises(ScanError):
            parse_bu3dfe_name(bad)


def test_bosphorus_names():
    assert parse_bosphorus_name("bs000_E_HAPPY_0.bnt").label == "happiness"
    neutral = parse_bosphorus_name("bs104_N_N_2")
    assert (neutral.subject, neutral.scan_class, neutral.code, neutral.repeat, neutral.label) == (
        "bs104", "N", "N", 2, "neutral",
    )
    au = parse_bosphorus_name("bs000_CAU_A26A12lw_0.bnt")
    assert (au.scan_class, au.code, au.label) == ("CAU", "A26A12lw", "")
    assert parse_bosphorus_name("bs001_LFAU_12LW_0.png").label == ""
    for bad in ["bs000_E_HAPPY.bnt", "bs000_E_HAPPY_0_1.bnt", "subject_E_HAPPY_0.bnt"]:
        with pytest.raises(ScanError):
            parse_bosphorus_name(bad)


def test_frame_numbers_sort_numerically():
    files = ["10.wrl", "9.wrl", "0100.obj", "011.wrl", "frame_2_000007.obj"]
    assert [frame_number(f) for f in files] == [10, 9, 100, 11, 7]
    assert sorted(files, key=frame_number) == ["frame_2_000007.obj", "9.wrl", "10.wrl", "011.wrl", "0100.obj"]
    with pytest.raises(ScanError, match="no frame number"):
        frame_number("apex.obj")


def test_class_lists_follow_the_design_order():
    assert CLASSES["bu4dfe"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert CLASSES["bu3dfe"][-1] == "neutral" and CLASSES["bosphorus"][-1] == "neutral"
    assert CLASSES["4dme"] == ["positive", "negative", "surprise", "repression", "others"]


# ----------------------------------------------------------------------------- 4DME


def test_4dme_annotations_normalised_and_multi_hot(tmp_path):
    columns = [" Sub_ID", "fold_name", "fold", "ONSET", "Apex ", "offset", "AUs", "Emotion", "eye blink",
               "positive", "Negative", "SURPRISE", "Repression", "Others"]
    rows = [
        [1.0, "clip_a", 1, 100, 105, 110, "AU4+AU7", "Negative", 0, 0, 1, 1, 0, 0],
        ["S02", "clip_b", 2, 7, "/", 9, "AU12", "Positive", 0, 1, 0, 0, 0, 0],
        ["S03", "clip_c", 1, "x", 5, 9, "", "Others", 0, 0, 0, 0, 0, None],
    ]
    table = read_annotations(write_4dme_xlsx(tmp_path / "ann.xlsx", rows, columns))
    assert table["subject"].tolist() == ["1", "S02", "S03"]
    assert table["clip"].tolist() == ["clip_a", "clip_b", "clip_c"]
    assert table["labels"].tolist() == ["negative|surprise", "positive", ""]
    assert table["label"].tolist() == ["negative", "positive", ""]
    assert table[CLASSES["4dme"]].to_numpy().tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    assert table["onset"].tolist()[:2] == [100, 7] and table["onset"].isna().tolist() == [False, False, True]
    assert table["apex"].isna().tolist() == [False, True, False]
    assert table["aus"].tolist() == ["AU4+AU7", "AU12", ""]


def test_4dme_missing_column_is_reported(tmp_path):
    path = write_4dme_xlsx(tmp_path / "ann.xlsx", [["S01", "c", 1, 2, 3]], ["sub_ID", "fold_name", "Onset", "Apex", "Offset"])
    with pytest.raises(ScanError, match="missing columns: aus, emotion, negative, others, positive"):
        read_annotations(path)
    with pytest.raises(ScanError, match="not found"):
        read_annotations(tmp_path / "none.xlsx")


# ----------------------------------------------------------------------------- real geometry

ICT = ICT_DIR


def _triangle_multiset(corners: np.ndarray) -> Counter:
    """(T, 3, K) corner attributes -> multiset of triangles, each rotated to its smallest corner.

    Exact float32 values as keys: both sides parse the same decimal text, and trimesh reorders
    faces, so only an order-free, rotation-free comparison is meaningful.
    """
    keys = [tuple(map(tuple, triangle)) for triangle in corners.astype(np.float32).tolist()]
    return Counter(min(k[r:] + k[:r] for r in range(3)) for k in keys)


@pytest.mark.skipif(not (ICT / "identity000.obj").is_file(), reason="ICT-FaceKit subset not present")
def test_real_obj_corners_and_uvs_match_the_file():
    # An independent reading of the ICT-FaceKit quad mesh: every triangle corner must carry the
    # position of its 'v' and the UV of its 'vt', whatever vertex splitting trimesh did.
    positions, uvs, polygons = [], [], []
    for line in (ICT / "identity000.obj").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "v":
            positions.append([float(x) for x in fields[1:4]])
        elif fields[0] == "vt":
            uvs.append([float(x) for x in fields[1:3]])
        elif fields[0] == "f":
            polygons.append([[int(i) - 1 for i in corner.split("/")[:2]] for corner in fields[1:]])
    positions, uvs = np.array(positions), np.array(uvs)
    expected = [
        [np.r_[positions[p[0][0]], uvs[p[0][1]]], np.r_[positions[p[k][0]], uvs[p[k][1]]],
         np.r_[positions[p[k + 1][0]], uvs[p[k + 1][1]]]]
        for p in polygons for k in range(1, len(p) - 1)
    ]
    mesh = read_mesh(ICT / "identity000.obj")
    assert mesh.n_faces == len(expected) == 2 * 25_836 + 548  # quads + triangles of the file
    got = np.concatenate([mesh.vertices[mesh.faces], mesh.uv[mesh.face_uv]], axis=2)
    assert _triangle_multiset(got) == _triangle_multiset(np.array(expected))
    assert mesh.texture is None  # the material library is not part of the subset


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"Positive": "x"}, "Positive cell 'x' is not 0 or 1"),
        ({"Positive": "yes"}, "Positive cell 'yes' is not 0 or 1"),
        ({"Positive": -1}, "Positive cell -1 is not 0 or 1"),
        ({"Positive": 0.5}, "Positive cell 0.5 is not 0 or 1"),
        ({"Negative": 2}, "Negative cell 2 is not 0 or 1"),
        ({"Others": None}, "Others cell (empty) is not 0 or 1"),
        ({"Positive": 0}, "no emotion class is marked 1"),
        ({"Emotion": "Negative"}, "Emotion 'Negative' disagrees with the one-hot columns (positive)"),
        ({"Emotion": "Happy"}, "Emotion 'Happy' names 'happy', not one of"),
        ({"Negative": 1}, "Emotion 'Positive' disagrees with the one-hot columns (positive+negative)"),
        ({"Apex": 20}, "apex 20 is outside onset..offset (7..9)"),
        ({"Onset": 10}, "onset 10 is after offset 9"),
        ({"Onset": "x"}, "Onset cell 'x' is not an integer frame number"),
        ({"Apex": "?"}, "Apex cell '?' is not an integer frame number"),
        ({"sub_ID": "../../elsewhere"}, "sub_ID '../../elsewhere' is a path, not a plain name"),
        ({"sub_ID": ".."}, "contains '..'"),
        ({"fold_name": "a\\b"}, "fold_name 'a\\\\b' is a path"),
        ({"fold_name": "C:clip"}, "drive path"),
    ],
)
def test_4dme_sheet_is_checked_cell_by_cell(tmp_path, change, problem):
    good = dict(zip(FOURDME_COLUMNS, ["S01", "clip", 1, 7, 8, 9, "AU12", "Positive", 0, 1, 0, 0, 0, 0]))
    rows = [list(good.values()), list({**good, "fold_name": "clip2", **change}.values())]
    table = read_annotations(write_4dme_xlsx(tmp_path / "ann.xlsx", rows))
    assert table["problem"].iloc[0] == "" and table["row"].tolist() == [2, 3]
    assert problem in table["problem"].iloc[1], table["problem"].iloc[1]


def test_4dme_sheet_accepts_joined_emotions_and_a_missing_apex(tmp_path):
    rows = [["S01", "a", 1, 7, "/", 9, "AU4", "Negative and Surprise", 0, 0, 1, 1, 0, 0],
            ["S01", "b", 1, 7, None, 9, "AU4", "negative+surprise", 0, "0", "1", 1.0, 0, 0],
            ["S01", "a", 1, 7, 8, 9, "AU4", "Negative+Surprise", 0, 0, 1, 1, 0, 0]]
    table = read_annotations(write_4dme_xlsx(tmp_path / "ann.xlsx", rows))
    assert table["problem"].tolist()[:2] == ["", ""]
    assert table["problem"].iloc[2] == "sub_ID 'S01', fold_name 'a' repeat row 2"
    assert table["labels"].tolist() == ["negative|surprise"] * 3
