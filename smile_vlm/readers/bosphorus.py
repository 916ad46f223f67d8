"""Bosphorus readers: ``.bnt`` range grids and ``.lm3`` / ``.lm2`` landmarks (docs/datasets.md)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import check_regular, check_values, read_limited, resolve_texture

_HEADER = struct.Struct("<HHdH")  # nrows, ncols, zmin, len(texture name)
_COUNT = struct.Struct("<I")
# Along a row and down a column the grid's pixels are equally far apart; a real scanner stays
# well within 3x, a swapped header is |rows - cols| x (check_grid_shape).
MAX_SPACING_RATIO = 3.0


@dataclass
class BntScan:
    """A Bosphorus range grid with rows flipped to image order (row 0 = top of the face).

    xyz (R, C, 3) float64 millimetres; valid (R, C) bool (False where Z == zmin, the
    background); uv (R, C, 2) float64 with the .bnt's own top-left origin; texture_name is the
    png named in the header.
    """

    xyz: np.ndarray
    valid: np.ndarray
    uv: np.ndarray
    texture_name: str
    zmin: float


@dataclass(frozen=True)
class BntHeader:
    nrows: int
    ncols: int
    zmin: float
    texture_name: str
    n_values: int
    data_offset: int


def read_bnt_header(path: str | Path, data: bytes | None = None, *, max_bytes: int | None = None) -> BntHeader:
    """Parse and check the header; the file size must be exactly header + 8 * n (§4.3).

    Without ``data`` only the header bytes are read, so a grid declared larger than the file
    (or a huge sparse file) is refused before anything of its size is allocated.
    """
    path = Path(path)
    if data is None:
        size = check_regular(path, max_bytes)
        data = read_limited(path, max_bytes, head=_HEADER.size + 65535 + _COUNT.size)
    else:
        size = len(data)
    if len(data) < _HEADER.size:
        raise ScanError(path, f"truncated .bnt header ({len(data)} bytes)")
    nrows, ncols, zmin, name_length = _HEADER.unpack_from(data)
    count_offset = _HEADER.size + name_length
    if len(data) < count_offset + _COUNT.size:
        raise ScanError(path, "truncated .bnt header (texture name / value count)")
    try:
        texture_name = data[_HEADER.size : count_offset].decode("ascii")
    except UnicodeDecodeError:
        raise ScanError(path, "texture name in the .bnt header is not ASCII") from None
    (n_values,) = _COUNT.unpack_from(data, count_offset)
    data_offset = count_offset + _COUNT.size
    if nrows == 0 or ncols == 0:
        raise ScanError(path, f"empty grid ({nrows} x {ncols})")
    if n_values != 5 * nrows * ncols:
        raise ScanError(path, f"value count {n_values} != 5 * {nrows} * {ncols}")
    expected = data_offset + 8 * n_values
    if size != expected:
        raise ScanError(path, f"file size {size} bytes, header implies {expected} (truncated or trailing data)")
    if not np.isfinite(zmin):
        raise ScanError(path, "non-finite zmin in the .bnt header")
    return BntHeader(nrows, ncols, float(zmin), texture_name, n_values, data_offset)


def read_bnt(path: str | Path, *, max_bytes: int | None = None) -> BntScan:
    """Read a ``.bnt``: 5 little-endian float64 planes X, Y, Z, U, V, each nrows x ncols."""
    path = Path(path)
    read_bnt_header(path, max_bytes=max_bytes)  # the declared grid against the size, before the read
    data = read_limited(path, max_bytes)
    header = read_bnt_header(path, data)
    planes = np.frombuffer(data, dtype="<f8", count=header.n_values, offset=header.data_offset)
    # The file stores the bottom row first; flip to image order like the public readers.
    planes = planes.reshape(5, header.nrows, header.ncols)[:, ::-1, :]
    xyz = np.ascontiguousarray(np.moveaxis(planes[:3], 0, -1))
    uv = np.ascontiguousarray(np.moveaxis(planes[3:], 0, -1))
    # Z alone marks the background: one sample has Z == zmin with real X/Y (§4.3).
    valid = xyz[..., 2] != header.zmin
    check_values(xyz[valid], path, "coordinates at valid grid points")
    check_values(uv[valid], path, "texture coordinates at valid grid points")
    check_grid_shape(xyz, valid, path)
    return BntScan(xyz=xyz, valid=valid, uv=uv, texture_name=header.texture_name, zmin=header.zmin)


def check_grid_shape(xyz: np.ndarray, valid: np.ndarray, path: Path) -> None:
    """ScanError when the grid's rows and columns disagree with its points' spacing.

    Neighbouring points of a range grid are one pixel apart in X/Y along a row and down a
    column alike. A header with rows and columns swapped (same size, so the size check passes)
    folds the planes into rows of the wrong length: down a column, neighbours then lie about
    |rows - cols| pixels apart, and the triangulation joins points across the face.
    """
    along = np.linalg.norm(np.diff(xyz[..., :2], axis=1), axis=-1)[valid[:, 1:] & valid[:, :-1]]
    down = np.linalg.norm(np.diff(xyz[..., :2], axis=0), axis=-1)[valid[1:] & valid[:-1]]
    if len(along) < 2 or len(down) < 2:
        return  # too few neighbours to tell; the mesh checks decide
    step_along, step_down = float(np.median(along)), float(np.median(down))
    if step_along == 0 or step_down == 0:
        return  # repeated points: the mesh checks name that
    ratio = max(step_along / step_down, step_down / step_along)
    if ratio > MAX_SPACING_RATIO:
        nrows, ncols = valid.shape
        raise ScanError(path, f"grid points are {step_down:.3g} apart down a column but {step_along:.3g} along a "
                              f"row ({ratio:.1f}x): the header's {nrows} rows and {ncols} columns look swapped")


def bnt_to_mesh(scan: BntScan, path: str | Path, *, require_texture: bool = False) -> Mesh:
    """Triangulate the valid grid points; ``path`` is the .bnt (errors, texture folder).

    Each grid cell with corners a b / c d (a top-left) gives triangles (a, c, d) and (a, d, b)
    when all four are valid, and the one triangle of its three valid corners when one is
    missing, so the face boundary keeps its half cells. Winding is counter-clockwise seen from
    +z, the direction the face looks. UVs become bottom-left origin (v -> 1 - v).
    """
    path = Path(path)
    valid = scan.valid
    n_valid = int(valid.sum())
    if n_valid < 3:
        raise ScanError(path, f"only {n_valid} valid grid points")
    vertex_id = np.full(valid.shape, -1, dtype=np.int64)
    vertex_id[valid] = np.arange(n_valid)

    a, b = vertex_id[:-1, :-1].ravel(), vertex_id[:-1, 1:].ravel()
    c, d = vertex_id[1:, :-1].ravel(), vertex_id[1:, 1:].ravel()
    ok_a, ok_b, ok_c, ok_d = a >= 0, b >= 0, c >= 0, d >= 0
    full = ok_a & ok_b & ok_c & ok_d
    three = (ok_a.astype(int) + ok_b + ok_c + ok_d) == 3
    triangles = [
        np.stack([a, c, d], axis=1)[full],
        np.stack([a, d, b], axis=1)[full],
        np.stack([c, d, b], axis=1)[three & ~ok_a],
        np.stack([a, c, d], axis=1)[three & ~ok_b],
        np.stack([a, d, b], axis=1)[three & ~ok_c],
        np.stack([a, c, b], axis=1)[three & ~ok_d],
    ]
    faces = np.concatenate(triangles)
    if len(faces) == 0:
        raise ScanError(path, "no grid cell has three valid corners")

    uv = scan.uv[valid].copy()
    uv[:, 1] = 1.0 - uv[:, 1]
    texture = None
    if scan.texture_name:
        texture = resolve_texture(path.parent, scan.texture_name, source=path, must_exist=require_texture)
        texture = texture if texture.is_file() else None
    elif require_texture:
        raise ScanError(path, "no texture name in the .bnt header")
    return Mesh(
        vertices=scan.xyz[valid],
        faces=faces,
        uv=uv,
        face_uv=faces.copy(),
        texture=texture,
        source=path,
    )


def read_lm3(path: str | Path, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """``.lm3``: '# 3D Landmark File', optional '*' info block, '<N> landmarks:', N (label, x y z)."""
    path = Path(path)
    lines = _lines(path, max_bytes)
    position = _skip_preamble(lines, path, "# 3D Landmark File")
    count, position = _count_line(lines, position, path)
    body = [line for line in lines[position:] if line]
    if len(body) < 2 * count:
        raise ScanError(path, f"header announces {count} landmarks, file has {len(body) // 2}")
    landmarks: dict[str, np.ndarray] = {}
    for label, values in zip(body[0 : 2 * count : 2], body[1 : 2 * count : 2]):
        landmarks[_unique(label, landmarks, path)] = _floats(values, 3, path, label)
    return landmarks


def read_lm2(path: str | Path, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """``.lm2``: '<N> landmarks', 'Labels:' + N labels, '2D Image coordinates:' + N 'x y' (pixels, top-left)."""
    path = Path(path)
    lines = _lines(path, max_bytes)
    position = _skip_preamble(lines, path, "# 2D Landmark File")
    count, position = _count_line(lines, position, path)
    body = [line for line in lines[position:] if line]
    try:
        labels_at = body.index("Labels:")
        coordinates_at = body.index("2D Image coordinates:")
    except ValueError:
        raise ScanError(path, "missing 'Labels:' or '2D Image coordinates:' section") from None
    labels = body[labels_at + 1 : coordinates_at]
    values = body[coordinates_at + 1 : coordinates_at + 1 + count]
    if len(labels) != count or len(values) != count:
        raise ScanError(path, f"header announces {count} landmarks, file has {len(labels)} labels, {len(values)} points")
    landmarks: dict[str, np.ndarray] = {}
    for label, row in zip(labels, values):
        landmarks[_unique(label, landmarks, path)] = _floats(row, 2, path, label)
    return landmarks


def _lines(path: Path, max_bytes: int | None = None) -> list[str]:
    text = read_limited(path, max_bytes).decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines()]  # splitlines drops the CR of CRLF


def _skip_preamble(lines: list[str], path: Path, title: str) -> int:
    """Index of the line after the comment line and the optional '*' info block."""
    if not lines or not lines[0].startswith("#"):
        raise ScanError(path, f"missing the {title!r} comment line")
    position = 1
    if position < len(lines) and lines[position].startswith("*"):
        while position < len(lines) and lines[position]:
            position += 1
    while position < len(lines) and not lines[position]:
        position += 1
    return position


def _count_line(lines: list[str], position: int, path: Path) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\s+landmarks:?", lines[position]) if position < len(lines) else None
    if match is None:
        raise ScanError(path, "missing the '<N> landmarks' line")
    return int(match.group(1)), position + 1


def _floats(row: str, size: int, path: Path, label: str) -> np.ndarray:
    fields = row.split()
    try:
        values = np.array(fields, dtype=np.float64)
    except ValueError:
        raise ScanError(path, f"non-numeric coordinates for {label!r}: {row!r}") from None
    if values.shape != (size,):
        raise ScanError(path, f"{label!r} has {len(fields)} coordinates, expected {size}")
    check_values(values, path, f"coordinates for {label!r}")  # 1e39 would become inf in float32
    return values.astype(np.float32)


def _unique(label: str, seen: dict, path: Path) -> str:
    if label in seen:
        raise ScanError(path, f"landmark {label!r} appears twice")
    return label
