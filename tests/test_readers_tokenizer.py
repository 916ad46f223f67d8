"""The C tokenizer (pandas, readers/numbers.py) is as strict as the general np.fromstring path.

Every corrupted file goes through the VRML and OBJ readers twice: as shipped, and with the C
tokenizer switched off so that every block takes the general path. Both must accept the same
files with the same arrays and reject the same files with the same reason.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from smile_vlm.errors import ScanError
from smile_vlm.readers import numbers
from smile_vlm.readers.obj import parse_obj
from smile_vlm.readers.vrml import parse_vrml
from smile_vlm.synth import writers
from test_fuzz_integrity import MUTATIONS


def grid(side: int = 9, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:side, 0:side]
    vertices = np.stack([cols * 3.0, rows * -3.0, rng.normal(0, 5, rows.shape)], axis=-1).reshape(-1, 3)
    ids = np.arange(side * side).reshape(side, side)
    a, b, c, d = ids[:-1, :-1].ravel(), ids[:-1, 1:].ravel(), ids[1:, 1:].ravel(), ids[1:, :-1].ravel()
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    uv = rng.uniform(0.05, 0.95, size=(len(vertices), 2))
    return vertices, triangles, uv


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    vertices, triangles, uv = grid()
    polygons = list(triangles)
    writers.write_vrml(folder / "a.wrl", vertices, polygons, uv, polygons, "a.jpg")
    writers.write_obj(folder / "a.obj", vertices, triangles, uv, triangles)
    return {".wrl": (folder / "a.wrl").read_bytes(), ".obj": (folder / "a.obj").read_bytes()}


def outcome(data: bytes, suffix: str, path: Path):
    """('mesh', arrays) or ('reject', reason) of one parse."""
    parse = parse_vrml if suffix == ".wrl" else parse_obj
    try:
        mesh = parse(data, path)
    except ScanError as error:
        return "reject", error.reason
    return "mesh", (mesh.vertices.tobytes(), mesh.faces.tobytes(), None if mesh.uv is None else mesh.uv.tobytes(),
                    None if mesh.face_uv is None else mesh.face_uv.tobytes())


def both_paths(data: bytes, suffix: str, path: Path):
    """(outcome through the C tokenizer, outcome through the general path, C tokenizer rows used)."""
    used = []
    real = numbers.float_rows

    def counting(block, width, **options):
        rows = real(block, width, **options)
        used.append(rows is not None)
        return rows

    with mock.patch.object(numbers, "float_rows", counting):
        fast = outcome(data, suffix, path)
    with mock.patch.object(numbers, "float_rows", lambda block, width, **options: None):
        general = outcome(data, suffix, path)
    return fast, general, any(used)


def float_block_corruptions(data: bytes, suffix: str) -> dict[str, bytes]:
    """Damage aimed at the float rows: what a tokenizer might read differently."""
    text = data.decode()
    if suffix == ".wrl":
        start = text.index("point [\n") + len("point [\n")
        line_end = text.index("\n", start)
        line = text[start:line_end]  # 'x y z,'
        x, y, z = line.rstrip(",").split()
    else:
        start = text.index("v ")
        line_end = text.index("\n", start)
        line = text[start:line_end]  # 'v x y z'
        x, y, z = line.split()[1:]
    keyword = "" if suffix == ".wrl" else "v "
    comma = "," if suffix == ".wrl" else ""

    def row(*values):
        return text[:start] + keyword + " ".join(values) + comma + text[line_end:]

    return {
        "nan": row("nan", y, z), "NA": row("NA", y, z), "quoted": row(f'"{x}"', y, z),
        "one more number": row(x, y, z, "1.0"), "one number less": row(x, y),
        "underscore": row("1_000", y, z), "double minus": row("--1", y, z), "overflow": row("1e39", y, z),
        "inf": row("inf", y, z), "hex": row("0x10", y, z), "exponent": row("1.5e2", y, z),
        "tabs": row(x + "\t", y, z), "empty field": text[:start] + keyword + f"{x},,{y} {z}{comma}" + text[line_end:],
        "crlf": data.replace(b"\n", b"\r\n").decode(),
        "two rows on one line": text[:line_end] + " " + text[line_end + 1:],
        "comment inside": text[:line_end] + " # note" + text[line_end:],
        "stray letter": row(x + "x", y, z), "unicode digit": row("١", y, z),
    }


@pytest.mark.parametrize("suffix", [".wrl", ".obj"])
def test_the_c_tokenizer_rejects_exactly_what_the_general_path_rejects(valid_files, tmp_path, suffix):
    data = valid_files[suffix]
    path = tmp_path / f"a{suffix}"
    fast, general, used = both_paths(data, suffix, path)
    assert fast == general and fast[0] == "mesh"
    assert used, "the valid file did not go through the C tokenizer"

    mutate, kinds = MUTATIONS[suffix]
    rng = np.random.default_rng(7)
    cases = {f"{kind} #{n}": mutate(data, kind, rng) for n in range(8) for kind in kinds}
    cases.update({name: text.encode() for name, text in float_block_corruptions(data, suffix).items()})
    outcomes = {}
    for name, corrupted in cases.items():
        fast, general, _ = both_paths(corrupted, suffix, path)
        assert fast == general, f"{name}: C tokenizer {fast[0]} {fast[1] if fast[0] == 'reject' else ''}, " \
                                f"general path {general[0]} {general[1] if general[0] == 'reject' else ''}"
        outcomes[name] = fast[0]
    # the corruptions are real: most are rejects, and layouts VRML allows still read
    assert sum(o == "reject" for o in outcomes.values()) > 0.7 * len(outcomes)
    assert outcomes["nan"] == outcomes["NA"] == outcomes["quoted"] == outcomes["one number less"] == "reject"
    assert outcomes["crlf"] == outcomes["exponent"] == outcomes["tabs"] == "mesh"
    if suffix == ".wrl":  # free layout: line breaks and comments are whitespace; 3 numbers a point
        assert outcomes["two rows on one line"] == outcomes["comment inside"] == "mesh"
        assert outcomes["one more number"] == "reject"
    else:  # 'v x y z w' is valid OBJ (w ignored)
        assert outcomes["one more number"] == "mesh"


def test_float_rows_takes_only_its_layout():
    rows = numbers.float_rows(b"  1 2 3\n\n4 5.5 -6\r\n", 3)
    assert rows.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.5, -6.0]]
    # anything else is left to the general path: never a silent drop or shift of numbers
    for block in (b"1 2 3 4 5 6\n7 8 9 10 11 12\n", b"1 2 3 4\n5 6 7 8\n", b"1 2 3\n4 5\n", b"1 2 3\n4 5 6 7\n",
                  b"1 2 nan\n", b'"1" 2 3\n', b"1 2 3 # c\n", b" \n\t\n"):
        assert numbers.float_rows(block, 3) is None, block
    # VRML: commas are whitespace; OBJ: a comma is no separator
    assert numbers.float_rows(b"\n   1 2 3,\n   4, 5.5 -6\n  ", 3, commas=True).tolist() == [[1, 2, 3], [4, 5.5, -6]]
    assert numbers.float_rows(b"1 2 3,\n4 5 6\n", 3) is None
    # the block is read where it stands in a larger text
    text = b"[ 1 2 3\n 4 5 6 ] 7 8 9"
    assert numbers.float_rows(text, 3, start=1, end=text.index(b"]")).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_a_block_on_one_line_goes_to_the_general_path_at_once(tmp_path):
    # pandas would make a column per number of a one-line block; the first line decides first
    line = " ".join(["1.5 2.5 3.5"] * 20000).encode()
    assert numbers.float_rows(line, 3) is None
    assert numbers.float_rows(b"1 2 3", 3).tolist() == [[1.0, 2.0, 3.0]]
    text = ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ "
            + " ".join(f"{i} 0 {i % 3}" for i in range(3000)) + " ] }\ncoordIndex [ 0 1 2 -1 ] } }\n")
    assert parse_vrml(text, tmp_path / "one_line.wrl").n_vertices == 3000
