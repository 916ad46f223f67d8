"""The fast VRML path (single-spaced float rows through pandas' C tokenizer, polygons split in
place) reads exactly what the general path and an independent reference read, and rejects
exactly what the general path rejects, with the same reason.

The reference below shares no code with the reader: Python's float() and int() on the
whitespace-split tokens of each block, polygons split on -1 in a Python loop.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from smile_vlm.errors import ScanError
from smile_vlm.readers import numbers
from smile_vlm.readers.vrml import parse_vrml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_vrml import make_vrml  # noqa: E402  the benchmark's BU-4DFE-like frame, smaller

_OPENINGS = {"coord": "point [", "coordIndex": "coordIndex [", "texCoord": "point [",
             "texCoordIndex": "texCoordIndex ["}


def reference(text: str):
    """(vertices, faces, uv, face_uv) of a valid file with all four blocks, by plain Python."""
    tokens = {}
    position = 0
    for what in ("coord", "coordIndex", "texCoord", "texCoordIndex"):
        position = text.index(_OPENINGS[what], text.index(what, position)) + len(_OPENINGS[what])
        end = text.index("]", position)
        tokens[what] = text[position:end].replace(",", " ").split()
        position = end

    def polygons(words):
        out, current = [], []
        for word in words + ["-1"]:
            if int(word) == -1:
                if current:
                    out.append(current)
                current = []
            else:
                current.append(int(word))
        return out

    def fan(polys):
        return [(p[0], p[k], p[k + 1]) for p in polys for k in range(1, len(p) - 1)]

    vertices = np.array([float(w) for w in tokens["coord"]], dtype=np.float32).reshape(-1, 3)
    uv = np.array([float(w) for w in tokens["texCoord"]], dtype=np.float32).reshape(-1, 2)
    faces = np.array(fan(polygons(tokens["coordIndex"])), dtype=np.int64)
    face_uv = np.array(fan(polygons(tokens["texCoordIndex"])), dtype=np.int64)
    return vertices, faces, uv, face_uv


def outcome(data: bytes, path: Path):
    """('mesh', arrays) or ('reject', reason)."""
    try:
        mesh = parse_vrml(data, path)
    except ScanError as error:
        return "reject", error.reason
    return "mesh", (mesh.vertices.tobytes(), mesh.faces.tobytes(), mesh.uv.tobytes(), mesh.face_uv.tobytes())


def both_paths(data: bytes, path: Path):
    """(outcome as shipped, outcome with every block through the general np.fromstring path)."""
    fast = outcome(data, path)
    with mock.patch.object(numbers, "float_rows", lambda block, width, **options: None):
        general = outcome(data, path)
    return fast, general


@pytest.fixture(scope="module")
def frame() -> str:
    return make_vrml(24)  # 576 vertices, quads and triangles, per-corner UVs, BU indentation


def layouts(text: str) -> dict[str, str]:
    """The same numbers in the layouts VRML allows, each still one file's worth of text."""
    return {
        "as written": text,
        "crlf": text.replace("\n", "\r\n"),
        "no indentation": "\n".join(line.strip() for line in text.split("\n")),
        "tab indentation": text.replace("            ", "\t\t"),
        "two spaces between numbers": text.replace(" -1", "  -1").replace(".0000 ", ".0000  "),
        "spaces before commas": text.replace(",\n", " ,\n"),
        "trailing spaces": text.replace(",\n", ",   \n"),
        "comma-separated indices": text.replace(" -1", ", -1"),
        "first point on the 'point [' line": text.replace("point [\n            ", "point [ "),
        "several rows on one line": text.replace(",\n            ", ", ", 40),
        "comments": text.replace(",\n", ", # note\n", 30),
    }


def test_every_layout_reads_the_reference_arrays_on_both_paths(frame, tmp_path):
    expected = reference(frame)
    for name, text in layouts(frame).items():
        fast, general = both_paths(text.encode(), tmp_path / "a.wrl")
        assert fast[0] == "mesh", f"{name}: {fast[1]}"
        assert fast == general, name
        vertices, faces, uv, face_uv = (np.frombuffer(b, dtype=d) for b, d in
                                        zip(fast[1], (np.float32, np.int64, np.float32, np.int64)))
        assert np.array_equal(vertices, expected[0].ravel()), name
        assert np.array_equal(faces, expected[1].ravel()), name
        assert np.array_equal(uv, expected[2].ravel()), name
        assert np.array_equal(face_uv, expected[3].ravel()), name


def test_the_float_rows_of_a_bu_frame_take_the_fast_path(frame):
    start = frame.index("point [") + len("point [")
    block = frame[start:frame.index("]", start)].encode()
    rows = numbers.float_rows(block, 3, commas=True)
    assert rows is not None and rows.shape == (24 * 24, 3)
    assert np.array_equal(rows.ravel(), numbers.general(block, np.float64))


def test_uv_polygons_placed_differently_from_the_vertex_polygons(tmp_path, frame):
    # same polygon structure, but an empty polygon and a last -1 only in texCoordIndex: the UV
    # corners must still be read from their own places
    start = frame.index("texCoordIndex [") + len("texCoordIndex [")
    end = frame.index("]", start)
    moved = frame[:start] + frame[start:end].replace(" -1,", " -1 -1,", 5) + " -1" + frame[end:]
    fast, general = both_paths(moved.encode(), tmp_path / "a.wrl")
    assert fast == general and fast[0] == "mesh"
    expected = reference(moved)
    assert np.array_equal(np.frombuffer(fast[1][3], dtype=np.int64), expected[3].ravel())
    assert not np.array_equal(expected[3], reference(frame)[1])  # the UV corners are not the vertex corners


def corruptions(text: str) -> dict[str, str]:
    """Damage to each kind of block: bad tokens, broken polygon lists, cut blocks."""
    point = text.index("point [") + len("point [\n            ")  # the first x
    x_end = text.index(" ", point)
    index = text.index("coordIndex [") + len("coordIndex [\n          ")  # the first corner
    corner_end = text.index(" ", index)
    uv_index = text.index("texCoordIndex [") + len("texCoordIndex [\n          ")
    uv_end = text.index(" ", uv_index)
    uv_block = text.index("texCoord ")

    def x(token):
        return text[:point] + token + text[x_end:]

    def corner(token):
        return text[:index] + token + text[corner_end:]

    def uv_corner(token):
        return text[:uv_index] + token + text[uv_end:]

    cases = {}
    for token in ("1.2.3", "nan", "NaN", "inf", "-inf", "--1", "1e", "1e39", "1x", "x", "-", "1,5", "+-1", "0x10",
                  "1_000", "\u0661", "5.", ".5", "1e-3", "-0"):
        cases[f"x = {token!r}"] = x(token)
    for token in ("1.5", "nan", "--1", "1e", "1e3", "x", "-2", "-7", "99999", "4294967296", "9223372036854775807",
                  "9223372036854775808", "99999999999999999999", "+1", "-0", "007", "-"):
        cases[f"corner = {token!r}"] = corner(token)
        cases[f"uv corner = {token!r}"] = uv_corner(token)
    first_end = text.index(" -1", index)
    cases.update({
        "a -1 terminator lost": text[:first_end] + text[first_end + 3:],
        "every -1 lost": text.replace(" -1", ""),
        "a two-corner polygon": text[:index] + "0 1 -1, " + text[index:],
        "an empty polygon": text[:index] + "-1 " + text[index:],
        "only -1": text[:index] + "-1 ]" + text[text.index("]", index) + 1:],
        "one -1 lost in texCoordIndex": text[:uv_index] + text[uv_index:].replace(" -1", "", 1),
        "x y z row short": text.replace(",\n", " ,\n", 1)[:point] + "1 2,\n" + text[text.index("\n", point) + 1:],
        "one number more": x("1 2"),
        "coord block cut": text[:text.index("]", point)] + text[text.index("coordIndex"):],
        "index block cut": text[:text.index("]", index)] + text[text.index("texCoord "):],
        "file cut in floats": text[:point + 5000],
        "file cut in indices": text[:index + 5000],
        "stray letter in the uv block": text[:uv_block] + text[uv_block:].replace(" 0.", " 0.q", 1),
        "tab between numbers": x(text[point:x_end] + "\t"),
        "NUL byte": x(text[point:x_end] + "\x00"),
        "bracket inside a block": x("[1"),
    })
    return cases


def test_corruptions_are_rejected_by_both_paths_alike(frame, tmp_path):
    rejected = 0
    cases = corruptions(frame)
    for name, text in cases.items():
        fast, general = both_paths(text.encode(), tmp_path / "a.wrl")
        assert fast == general, f"{name}: fast {fast[0]} {fast[1] if fast[0] == 'reject' else ''}, " \
                                f"general {general[0]} {general[1] if general[0] == 'reject' else ''}"
        rejected += fast[0] == "reject"
        if fast[0] == "mesh":  # accepted damage is damage VRML allows: the reference reads the same
            expected = reference(text)
            assert np.array_equal(np.frombuffer(fast[1][1], dtype=np.int64), expected[1].ravel()), name
    assert rejected > 0.75 * len(cases)
    for name in ("x = '1.2.3'", "x = 'nan'", "x = 'inf'", "x = '--1'", "x = '1e'", "x = '1e39'", "x = 'x'",
                 "corner = '--1'", "corner = '1.5'", "corner = '-2'", "corner = '99999'", "uv corner = '-7'",
                 "corner = '99999999999999999999'", "corner = '9223372036854775808'", "a two-corner polygon",
                 "one -1 lost in texCoordIndex", "coord block cut", "index block cut", "file cut in floats",
                 "file cut in indices", "stray letter in the uv block", "x y z row short", "one number more"):
        fast, _ = both_paths(cases[name].encode(), tmp_path / "a.wrl")
        assert fast[0] == "reject", name
    for name in ("x = '1e-3'", "x = '5.'", "x = '-0'", "corner = '007'", "an empty polygon", "tab between numbers"):
        fast, _ = both_paths(cases[name].encode(), tmp_path / "a.wrl")
        assert fast[0] == "mesh", name


def test_single_spacing_keeps_every_number_and_line(tmp_path):
    rng = np.random.default_rng(3)
    gaps = [" ", "  ", ",", ", ", " ,", "\t", " \t "]
    ends = ["\n", ",\n", " \n", "\r\n", ", \n", "\n\n   "]
    for _ in range(200):
        words = [f"{v:.3f}" for v in rng.normal(0, 50, int(rng.integers(1, 30)))]
        text = " " * int(rng.integers(0, 4))
        for word in words:
            separators = gaps if rng.random() < 0.7 else ends
            text += word + separators[int(rng.integers(len(separators)))]
        block = text.encode()
        spaced = numbers.single_spaced(block, commas=True)
        assert spaced.split() == block.replace(b",", b" ").split()
        assert [line.split() for line in spaced.splitlines() if line.strip()] == \
            [line.replace(b",", b" ").split() for line in block.splitlines() if line.strip()]
        assert not any(line.startswith(b" ") for line in spaced.splitlines())
    # without commas (OBJ), a comma is not a separator and stays where it was
    assert numbers.single_spaced(b"  1,2   3\n", commas=False) == b"1,2 3\n"
    assert numbers.single_spaced(b"", commas=True) == b""


def test_single_spacing_a_piece_at_a_time_gives_the_same_bytes(frame):
    # the block is single-spaced in pieces cut after line ends; any piece size gives one result
    text = layouts(frame)["crlf"].encode() + b"  1.5 2.5 3.5  \n\n 4 5 6"
    whole = numbers.single_spaced(text, commas=True)
    for piece in (1, 7, 64, 1000):
        with mock.patch.object(numbers, "_PIECE_BYTES", piece):
            assert numbers.single_spaced(text, commas=True) == whole, piece
            assert numbers.single_spaced(text, True, 100, len(text) - 3) == \
                numbers.single_spaced(text[100:-3], commas=True), piece
    assert len(text) > 1000 and whole.count(b"\n") == text.count(b"\n")
