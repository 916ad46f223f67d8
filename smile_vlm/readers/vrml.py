"""VRML 2.0 IndexedFaceSet reader (BU-3DFE, BU-4DFE and maybe BP4D; docs/datasets.md).

Only the four data blocks matter: ``coord Coordinate { point [...] }``, ``coordIndex [...]``,
``texCoord TextureCoordinate { point [...] }`` and ``texCoordIndex [...]``, plus the texture
``url``. The file is handled as bytes; each block is found by its '[' and the opening before
it, and converted in C (float rows by pandas' C tokenizer once their indentation is cut,
index lists by ``np.fromstring``; readers/numbers.py), because per-line Python parsing of a
35k-vertex BU-4DFE frame is several times slower (see benchmarks/bench_vrml.py). Polygons
are split where they stand in the index list, without a copy of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import check_values, numbers, read_limited, scan_texture

# Each number block opens with '[' right after its keyword. Blocks are found by walking the
# few '[' of a file (memchr-fast) and matching the opening that ends at each one, within
# _OPENING_BYTES before it, so the megabytes of numbers are never searched for keywords.
_WORD_START = rb"(?<![A-Za-z0-9_])"
_BLOCKS = {
    "coord point": re.compile(_WORD_START + rb"coord\s+(?:DEF\s+\S+\s+)?Coordinate\s*\{\s*point\s*\[\Z"),
    "coordIndex": re.compile(_WORD_START + rb"coordIndex\s*\[\Z"),
    "texCoord point": re.compile(_WORD_START + rb"texCoord\s+(?:DEF\s+\S+\s+)?TextureCoordinate\s*\{\s*point\s*\[\Z"),
    "texCoordIndex": re.compile(_WORD_START + rb"texCoordIndex\s*\[\Z"),
}
_OPENING_BYTES = 4096
_MAX_BRACKETS = 4096  # a flood of '[' must not cost a Python step each
_COORD_OPENING = re.compile(_BLOCKS["coord point"].pattern[:-2])  # without the end anchor
_URL = re.compile(_WORD_START + rb'url\s*\[?\s*"([^"]*)"')
_BOM_AND_SPACE = b"\xef\xbb\xbf \t\r\n"


def read_vrml(path: str | Path, *, require_texture: bool = False, max_bytes: int | None = None) -> Mesh:
    """Read a VRML 2.0 file with one textured IndexedFaceSet as a triangle ``Mesh``."""
    path = Path(path)
    return parse_vrml(read_limited(path, max_bytes), path, require_texture=require_texture)


def parse_vrml(text: bytes | str, path: str | Path, *, require_texture: bool = False) -> Mesh:
    """Parse VRML bytes (or text); ``path`` names the file in errors and anchors the texture lookup.

    Polygons are fan-triangulated; UVs stay per face-corner (``face_uv``) because BU-3DFE has
    more texture coordinates than vertices. A missing texture file leaves ``texture=None``
    unless ``require_texture``; a ``url`` pointing outside the scan folder is always an error.
    """
    path = Path(path)
    text = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    check_header(text[:256], path)
    blocks, skeleton = _split_blocks(text, path)
    # A cut file loses closing braces/brackets; counting them also catches a cut that falls
    # between two blocks, which block-wise parsing alone would read as "no texture coordinates".
    # The skeleton (text outside the number blocks) is a few hundred bytes, so this is cheap.
    if skeleton.count(b"{") != skeleton.count(b"}") or skeleton.count(b"[") != skeleton.count(b"]"):
        raise ScanError(path, "truncated or malformed file: unbalanced braces or brackets")
    if skeleton.count(b"coordIndex") > 1:
        raise ScanError(path, "several IndexedFaceSets; only single-shape files are supported")

    vertices = _floats(text, blocks["coord point"], 3, path, "coord point")
    if vertices is None or vertices.size == 0:
        raise ScanError(path, "no vertices (missing or empty 'coord Coordinate { point [' block)")
    if vertices.size % 3:
        raise ScanError(path, f"coord point block holds {vertices.size} numbers, not x y z triples")
    vertices = vertices.reshape(-1, 3)
    check_values(vertices, path, "vertex coordinates")

    coord_index = _numbers(text, blocks["coordIndex"], np.int64, path, "coordIndex")
    if coord_index is None or coord_index.size == 0:
        raise ScanError(path, "no polygons (missing or empty 'coordIndex [' block)")
    starts, lengths = _polygons(coord_index, path, "coordIndex")
    _check_range(coord_index, len(vertices), path, "coordIndex", "vertices")
    positions = fan_positions(starts, lengths)
    faces = coord_index[positions]

    uv = face_uv = None
    uv_values = _floats(text, blocks["texCoord point"], 2, path, "texCoord point")
    tex_index = _numbers(text, blocks["texCoordIndex"], np.int64, path, "texCoordIndex")
    if uv_values is not None and uv_values.size:
        if uv_values.size % 2:
            raise ScanError(path, f"texCoord point block holds {uv_values.size} numbers, not u v pairs")
        uv = uv_values.reshape(-1, 2)
        check_values(uv, path, "texture coordinates")
        if tex_index is None or tex_index.size == 0:
            # VRML 2.0: without texCoordIndex, coordIndex indexes the UVs
            uv_index, uv_positions = coord_index, positions
        else:
            uv_starts, uv_lengths = _polygons(tex_index, path, "texCoordIndex")
            if not np.array_equal(uv_lengths, lengths):
                raise ScanError(path, "texCoordIndex does not have the polygon structure of coordIndex")
            uv_index, uv_positions = tex_index, positions
            if not np.array_equal(uv_starts, starts):  # an empty polygon or a last -1 in one list only
                uv_positions = fan_positions(uv_starts, lengths)
        _check_range(uv_index, len(uv), path, "texCoordIndex", "texture coordinates")
        face_uv = uv_index[uv_positions]
    elif tex_index is not None and tex_index.size:
        raise ScanError(path, "texCoordIndex without a texCoord block")

    return Mesh(
        vertices=vertices,
        faces=faces,
        uv=uv,
        face_uv=face_uv,
        texture=_texture(skeleton, path, require_texture),
        source=path,
    )


def check_header(head: bytes, path: Path) -> None:
    """The first bytes of a file must say VRML 2.0."""
    head = head.lstrip(_BOM_AND_SPACE)[:64]
    if not head.startswith(b"#VRML"):
        raise ScanError(path, "not a VRML file (no '#VRML' header)")
    if not head.startswith(b"#VRML V2.0"):
        first = head.splitlines()[0].decode("utf-8", errors="replace")
        raise ScanError(path, f"unsupported VRML version {first!r} (need V2.0)")


def check_ends(head: bytes, tail: bytes, whole: bool, path: Path) -> str | None:
    """The cheap checks of a frame that is not rendered (index.validate: sampled): VRML 2.0
    header, a coordinate block (its opening in the head; every block when ``head`` is the
    whole file), a scene that ends closed (a cut file ends inside a block). Returns the url."""
    check_header(head[:256], path)
    if whole:
        blocks, _ = _split_blocks(head, path)
        missing = [what for what in ("coord point", "coordIndex") if blocks[what] is None]
        if missing:
            raise ScanError(path, f"no {' or '.join(missing)} block")
    elif _COORD_OPENING.search(head) is None:
        raise ScanError(path, f"no 'coord Coordinate {{ point [' block in the first {len(head)} bytes")
    if _last_statement(tail)[-1:] not in (b"}", b"]"):
        raise ScanError(path, "truncated file: it does not end with the '}' or ']' that closes the scene")
    return texture_url(head)


def _last_statement(tail: bytes) -> bytes:
    """The last line of ``tail`` that holds more than whitespace or a comment, stripped."""
    for line in reversed(tail.splitlines()):
        statement = line.split(b"#", 1)[0].strip()
        if statement:
            return statement
    return b""


def texture_url(text: bytes | str) -> str | None:
    """The first ``url "..."`` of a VRML text (the ImageTexture), or None."""
    text = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    match = _URL.search(text)
    return match.group(1).decode("utf-8", errors="replace") if match else None


def _texture(text: bytes, path: Path, require_texture: bool) -> Path | None:
    return scan_texture(path, texture_url(text), require_texture=require_texture, why_none="no texture url")


def _split_blocks(text: bytes, path: Path) -> tuple[dict[str, slice | None], bytes]:
    """Where the four number blocks are (``text[where]``: the first of each kind; None when
    absent) and the text outside them. The blocks are megabytes: they are not copied here."""
    blocks: dict[str, slice | None] = dict.fromkeys(_BLOCKS)
    spans = []
    position, previous, examined = text.find(b"["), 0, 0
    while position >= 0 and None in blocks.values():
        examined += 1
        if examined > _MAX_BRACKETS:
            raise ScanError(path, f"malformed file: over {_MAX_BRACKETS} '[' outside the number blocks "
                                  "(a single-shape scan has a handful)")
        # An opening holds no bracket, so it is looked for only after the previous one: each
        # byte is matched against the openings once, however many brackets a file holds.
        what = _opening(text, max(previous, position - _OPENING_BYTES), position)
        if what is None or blocks[what] is not None:
            previous, position = position + 1, text.find(b"[", position + 1)
            continue
        end = text.find(b"]", position + 1)
        if end < 0:
            raise ScanError(path, f"truncated file: {what} block has no closing ']'")
        following = text.find(b"[", position + 1)  # needed next anyway: one scan of the block less
        if 0 <= following < end or text.find(b"{", position + 1, end) >= 0:
            raise ScanError(path, f"truncated or malformed file: {what} block is not closed before the next block")
        blocks[what] = slice(position + 1, end)
        spans.append((position + 1, end))
        previous, position = end + 1, following
    pieces, previous = [], 0
    for start, end in spans:
        pieces.append(text[previous:start])
        previous = end
    pieces.append(text[previous:])
    return blocks, b"".join(pieces)


def _opening(text: bytes, start: int, bracket: int) -> str | None:
    """The block that the '[' at ``bracket`` opens (its opening starting at or after ``start``), or None."""
    window = text[start : bracket + 1]
    for what, pattern in _BLOCKS.items():
        if pattern.search(window):
            return what
    return None


def _floats(text: bytes, where: slice | None, width: int, path: Path, what: str) -> np.ndarray | None:
    """The numbers of the float block ``text[where]``: ``width`` per line through the C
    tokenizer when the block has that layout (no comments), else through ``_numbers``."""
    if where is None:
        return None
    if text.find(b"#", where.start, where.stop) < 0:
        rows = numbers.float_rows(text, width, commas=True, start=where.start, end=where.stop)
        if rows is not None:
            return rows.reshape(-1)
    return _numbers(text, where, np.float64, path, what)


def _numbers(text: bytes, where: slice | None, dtype, path: Path, what: str) -> np.ndarray | None:
    """The numbers of the block ``text[where]`` in any layout, commas and '#' comments counting as whitespace."""
    if where is None:
        return None
    try:
        return numbers.general(text[where], dtype)
    except ValueError:
        kind = "integers" if dtype is np.int64 else "numbers"
        raise ScanError(path, f"{what} block holds something other than {kind}") from None


def _polygons(index: np.ndarray, path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split a -1-terminated index list: (position of each polygon's first corner in ``index``,
    corners of each polygon). The corners stay in ``index``, so no copy without the -1 is made.

    The last polygon may lack its -1; repeated -1 (empty polygons) are dropped.
    """
    if index.min() < -1:
        raise ScanError(path, f"negative index {int(index[index < -1][0])} in {what}")
    ends = np.flatnonzero(index == -1)
    if ends.size == 0 or ends[-1] != index.size - 1:
        ends = np.append(ends, index.size)  # where the missing last -1 would be
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    if lengths.min() == 0:
        kept = lengths > 0
        starts, lengths = starts[kept], lengths[kept]
    if lengths.size == 0:
        raise ScanError(path, f"no polygons in {what}")
    if lengths.min() < 3:
        raise ScanError(path, f"{what} has a polygon with {int(lengths[lengths < 3][0])} corners (need >= 3)")
    return starts, lengths


def fan_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(T, 3) positions of the triangles' corners in a list where each polygon's corners follow
    each other from ``starts``: polygon (c0 .. cn) -> (c0, ck, ck+1), k = 1..n-1."""
    n_triangles = lengths - 2
    first_triangle = np.cumsum(n_triangles) - n_triangles
    positions = np.empty((int(n_triangles.sum()), 3), dtype=np.int64)
    positions[:, 0] = np.repeat(starts, n_triangles)
    # ck = c0 + k: triangle t of the file is triangle k = t - first_triangle + 1 of its polygon
    second = np.repeat(starts - first_triangle + 1, n_triangles)
    second += np.arange(len(positions))
    positions[:, 1] = second
    second += 1
    positions[:, 2] = second
    return positions


def _check_range(indices: np.ndarray, count: int, path: Path, what: str, target: str) -> None:
    """Every index below ``count`` (the -1 terminators in ``indices`` are below any count)."""
    largest = int(indices.max())
    if largest >= count:
        raise ScanError(path, f"{what} refers to index {largest} but there are only {count} {target}")
