"""VRML 2.0 IndexedFaceSet reader (BU-3DFE, BU-4DFE and maybe BP4D; datasets.md §1.3, §2.3).

Only the four data blocks matter: ``coord Coordinate { point [...] }``, ``coordIndex [...]``,
``texCoord TextureCoordinate { point [...] }`` and ``texCoordIndex [...]``, plus the texture
``url``. Each block is located by keyword and converted in one C call (``np.fromstring``),
because per-line Python parsing of a 35k-vertex BU-4DFE frame (60 000 of them) dominates
indexing time (see benchmarks/bench_vrml.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import scan_texture

# (keyword, pattern anchored at the keyword). Blocks are found with str.find on the keyword
# and confirmed with the pattern: a regex search over a multi-megabyte file (no literal prefix
# to skip ahead with) costs more than parsing all its numbers.
_COORD = ("coord", re.compile(r"coord\s+(?:DEF\s+\S+\s+)?Coordinate\s*\{\s*point\s*\["))
_COORD_INDEX = ("coordIndex", re.compile(r"coordIndex\s*\["))
_TEX_COORD = ("texCoord", re.compile(r"texCoord\s+(?:DEF\s+\S+\s+)?TextureCoordinate\s*\{\s*point\s*\["))
_TEX_COORD_INDEX = ("texCoordIndex", re.compile(r"texCoordIndex\s*\["))
_BLOCKS = {
    "coord point": _COORD,
    "coordIndex": _COORD_INDEX,
    "texCoord point": _TEX_COORD,
    "texCoordIndex": _TEX_COORD_INDEX,
}
_URL = ("url", re.compile(r'url\s*\[?\s*"([^"]*)"'))
_COMMENT = re.compile(r"#[^\n]*")


def read_vrml(path: str | Path, *, require_texture: bool = False) -> Mesh:
    """Read a VRML 2.0 file with one textured IndexedFaceSet as a triangle ``Mesh``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    return parse_vrml(data.decode("utf-8", errors="replace"), path, require_texture=require_texture)


def parse_vrml(text: str, path: str | Path, *, require_texture: bool = False) -> Mesh:
    """Parse VRML text; ``path`` names the file in errors and anchors the texture lookup.

    Polygons are fan-triangulated; UVs stay per face-corner (``face_uv``) because BU-3DFE has
    more texture coordinates than vertices. A missing texture file leaves ``texture=None``
    unless ``require_texture``; a ``url`` pointing outside the scan folder is always an error.
    """
    path = Path(path)
    head = text[:256].lstrip("\ufeff \t\r\n")[:64]
    if not head.startswith("#VRML"):
        raise ScanError(path, "not a VRML file (no '#VRML' header)")
    if not head.startswith("#VRML V2.0"):
        raise ScanError(path, f"unsupported VRML version {head.splitlines()[0]!r} (need V2.0)")
    blocks, skeleton = _split_blocks(text, path)
    # A cut file loses closing braces/brackets; counting them also catches a cut that falls
    # between two blocks, which block-wise parsing alone would read as "no texture coordinates".
    # The skeleton (text outside the number blocks) is a few hundred bytes, so this is cheap.
    if skeleton.count("{") != skeleton.count("}") or skeleton.count("[") != skeleton.count("]"):
        raise ScanError(path, "truncated or malformed file: unbalanced braces or brackets")
    if skeleton.count("coordIndex") > 1:
        raise ScanError(path, "several IndexedFaceSets; only single-shape files are supported")

    vertices = _numbers(blocks["coord point"], np.float64, path, "coord point")
    if vertices is None or vertices.size == 0:
        raise ScanError(path, "no vertices (missing or empty 'coord Coordinate { point [' block)")
    if vertices.size % 3:
        raise ScanError(path, f"coord point block holds {vertices.size} numbers, not x y z triples")
    vertices = vertices.reshape(-1, 3)
    if not np.isfinite(vertices).all():
        raise ScanError(path, "non-finite (NaN or inf) vertex coordinates")

    coord_index = _numbers(blocks["coordIndex"], np.int64, path, "coordIndex")
    if coord_index is None or coord_index.size == 0:
        raise ScanError(path, "no polygons (missing or empty 'coordIndex [' block)")
    corners, starts, lengths = _polygons(coord_index, path, "coordIndex")
    _check_range(corners, len(vertices), path, "coordIndex", "vertices")
    positions = _fan_positions(starts, lengths)
    faces = corners[positions]

    uv = face_uv = None
    uv_values = _numbers(blocks["texCoord point"], np.float64, path, "texCoord point")
    tex_index = _numbers(blocks["texCoordIndex"], np.int64, path, "texCoordIndex")
    if uv_values is not None and uv_values.size:
        if uv_values.size % 2:
            raise ScanError(path, f"texCoord point block holds {uv_values.size} numbers, not u v pairs")
        uv = uv_values.reshape(-1, 2)
        if not np.isfinite(uv).all():
            raise ScanError(path, "non-finite (NaN or inf) texture coordinates")
        if tex_index is None or tex_index.size == 0:
            uv_corners = corners  # VRML 2.0: without texCoordIndex, coordIndex indexes the UVs
        else:
            uv_corners, _, uv_lengths = _polygons(tex_index, path, "texCoordIndex")
            if not np.array_equal(uv_lengths, lengths):
                raise ScanError(path, "texCoordIndex does not have the polygon structure of coordIndex")
        _check_range(uv_corners, len(uv), path, "texCoordIndex", "texture coordinates")
        face_uv = uv_corners[positions]
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


def texture_url(text: str) -> str | None:
    """The first ``url "..."`` of a VRML text (the ImageTexture), or None."""
    match = _find(text, _URL)
    return match.group(1) if match else None


def _texture(text: str, path: Path, require_texture: bool) -> Path | None:
    return scan_texture(path, texture_url(text), require_texture=require_texture, why_none="no texture url")


def _find(text: str, opening: tuple[str, re.Pattern]) -> re.Match | None:
    """First match of ``opening`` that starts a word (so 'coord' never matches 'texCoord')."""
    keyword, pattern = opening
    start = text.find(keyword)
    while start >= 0:
        if start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_"):
            match = pattern.match(text, start)
            if match is not None:
                return match
        start = text.find(keyword, start + 1)
    return None


def _split_blocks(text: str, path: Path) -> tuple[dict[str, str | None], str]:
    """The four number blocks (None when absent) and the text outside them."""
    blocks: dict[str, str | None] = {}
    spans = []
    for what, opening in _BLOCKS.items():
        match = _find(text, opening)
        if match is None:
            blocks[what] = None
            continue
        end = text.find("]", match.end())
        if end < 0:
            raise ScanError(path, f"truncated file: {what} block has no closing ']'")
        block = text[match.end() : end]
        if "[" in block or "{" in block:
            raise ScanError(path, f"truncated or malformed file: {what} block is not closed before the next block")
        blocks[what] = block
        spans.append((match.end(), end))
    pieces, previous = [], 0
    for start, end in sorted(spans):
        pieces.append(text[previous:start])
        previous = end
    pieces.append(text[previous:])
    return blocks, "".join(pieces)


def _numbers(block: str | None, dtype, path: Path, what: str) -> np.ndarray | None:
    """The numbers of one block, commas and '#' comments counting as whitespace."""
    if block is None:
        return None
    if "#" in block:
        block = _COMMENT.sub(" ", block)
    block = block.replace(",", " ")
    if not block.strip():
        # np.fromstring turns a whitespace-only string into [-1.]
        return np.empty(0, dtype=dtype)
    try:
        return np.fromstring(block, dtype=dtype, sep=" ")
    except ValueError:
        kind = "integers" if dtype is np.int64 else "numbers"
        raise ScanError(path, f"{what} block holds something other than {kind}") from None


def _polygons(index: np.ndarray, path: Path, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a -1-terminated index list: (corner indices, first corner of each polygon, lengths).

    The last polygon may lack its -1; repeated -1 (empty polygons) are dropped.
    """
    if (index < -1).any():
        raise ScanError(path, f"negative index {int(index[index < -1][0])} in {what}")
    if index[-1] != -1:
        index = np.append(index, -1)
    ends = np.flatnonzero(index == -1)
    lengths = np.diff(ends, prepend=-1) - 1
    lengths = lengths[lengths > 0]
    if (lengths < 3).any():
        raise ScanError(path, f"{what} has a polygon with {int(lengths[lengths < 3][0])} corners (need >= 3)")
    corners = index[index != -1]
    if corners.size == 0:
        raise ScanError(path, f"no polygons in {what}")
    starts = np.cumsum(lengths) - lengths
    return corners, starts, lengths


def _fan_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(T, 3) positions into the corner list: polygon (c0 .. cn) -> (c0, ck, ck+1), k = 1..n-1."""
    n_triangles = lengths - 2
    polygon = np.repeat(np.arange(len(lengths)), n_triangles)
    first_triangle = np.cumsum(n_triangles) - n_triangles
    k = np.arange(int(n_triangles.sum())) - first_triangle[polygon] + 1
    base = starts[polygon]
    return np.stack([base, base + k, base + k + 1], axis=1)


def _check_range(indices: np.ndarray, count: int, path: Path, what: str, target: str) -> None:
    largest = int(indices.max())
    if largest >= count:
        raise ScanError(path, f"{what} refers to index {largest} but there are only {count} {target}")
