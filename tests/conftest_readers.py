"""Writers of small raw files in the exact dataset formats, shared by the reader and index tests.

Imported as a plain module (``from conftest_readers import ...``): pytest puts tests/ on
sys.path because tests/ is not a package.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd


def vrml_text(
    vertices,
    polygons,
    uvs=None,
    uv_polygons=None,
    url: str | None = "tex.bmp",
    commas: bool = False,
    first_on_point_line: bool = True,
    trailing_minus_one: bool = False,
) -> str:
    """The BU-3DFE F3D skeleton of docs/datasets.md around the given data.

    ``commas`` writes '0, 1, 2, -1,' style indices; the last polygon has no trailing -1
    unless ``trailing_minus_one``.
    """

    def index_block(polys):
        sep = ", " if commas else " "
        rows = [sep.join(str(i) for i in (list(p) + [-1])) for p in polys]
        if not trailing_minus_one:
            rows[-1] = rows[-1].rsplit(sep, 1)[0]
        return ",\n          ".join(rows)

    def point_block(points, fmt):
        rows = [" ".join(fmt.format(x) for x in p) for p in points]
        body = ",\n            ".join(rows)
        return ("point [ " if first_on_point_line else "point [\n            ") + body + "\n          ]"

    texture = (
        f"""      appearance Appearance {{
        texture ImageTexture {{
          url "{url}"
          repeatS FALSE
          repeatT FALSE
        }}
      }}
"""
        if url is not None
        else ""
    )
    uv_part = ""
    if uvs is not None:
        uv_part = f"""        texCoord TextureCoordinate {{
          {point_block(uvs, "{:g}")}
        }}
        texCoordIndex [
          {index_block(uv_polygons)}
        ]
"""
    return f"""#VRML V2.0 utf8
#Tricorder Technology plc - 2000
DEF Tricorder_object Transform {{
  children [
    Shape {{
{texture}      geometry IndexedFaceSet {{
        ccw TRUE
        solid FALSE
        convex TRUE
        creaseAngle 1.57
        coord Coordinate {{
          {point_block(vertices, "{:g}")}
        }}
        coordIndex [
          {index_block(polygons)}
        ]
{uv_part}      }}
    }}
  ]
}}
DEF Tricorder_Camera_Front Viewpoint {{ position 7.76 -26.35 214.7 }}
"""


# A quad, a pentagon and a final triangle without its -1; per-corner UVs whose indices differ
# from the vertex indices (there are more UVs than vertices, as in BU-3DFE).
POLY_VERTICES = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (2, 1, 0), (2, 2, 0), (0, 2, 0)]
POLY_POLYGONS = [(0, 1, 2, 3), (3, 2, 4, 5, 6), (1, 4, 2)]
POLY_UVS = [(0.1 * i, 1 - 0.05 * i) for i in range(10)]
POLY_UV_POLYGONS = [(0, 1, 2, 3), (4, 5, 6, 7, 8), (9, 1, 5)]
POLY_FACES = [(0, 1, 2), (0, 2, 3), (3, 2, 4), (3, 4, 5), (3, 5, 6), (1, 4, 2)]
POLY_FACE_UV = [(0, 1, 2), (0, 2, 3), (4, 5, 6), (4, 6, 7), (4, 7, 8), (9, 1, 5)]


def write_vrml(path: Path, url: str | None = "tex.bmp", texture: bool = True, **kwargs) -> Path:
    """The polygon fixture above, plus its texture file unless ``texture`` is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(vrml_text(POLY_VERTICES, POLY_POLYGONS, POLY_UVS, POLY_UV_POLYGONS, url=url, **kwargs))
    if texture and url is not None:
        (path.parent / url).write_bytes(b"BM fake bitmap")
    return path


def bnt_bytes(xyz_top_first: np.ndarray, uv_top_first: np.ndarray, name: str, zmin: float = -1e9) -> bytes:
    """A .bnt per docs/datasets.md: header, then X Y Z U V planes stored bottom row first."""
    planes = np.concatenate([np.moveaxis(xyz_top_first, -1, 0), np.moveaxis(uv_top_first, -1, 0)])
    planes = planes[:, ::-1, :]  # the file's row 0 is the bottom of the face
    nrows, ncols = planes.shape[1:]
    encoded = name.encode("ascii")
    return (
        struct.pack("<HHdH", nrows, ncols, zmin, len(encoded))
        + encoded
        + struct.pack("<I", planes.size)
        + planes.astype("<f8").tobytes()
    )


ZMIN = -1e9
# Top-first validity of the 3 x 4 fixture grid: (0,3) and (2,0) are background; (1,3) has
# Z == zmin but real X/Y, which must still count as invalid (§4.3).
BNT_VALID = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [0, 1, 1, 1]], dtype=bool)


def bnt_grid() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:3, 0:4].astype(float)
    xyz = np.stack([cols, 2 - rows, 10 + 10 * rows + cols], axis=-1)
    uv = np.stack([cols / 4 + 0.1, rows / 3 + 0.05], axis=-1)
    xyz[~BNT_VALID] = ZMIN
    xyz[1, 3, :2] = (3.0, 1.0)  # real X/Y, background Z
    return xyz, uv


def write_bnt(path: Path, texture: bool = True, name: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = name if name is not None else path.with_suffix(".png").name
    xyz, uv = bnt_grid()
    path.write_bytes(bnt_bytes(xyz, uv, name, ZMIN))
    if texture:
        (path.parent / name).write_bytes(b"\x89PNG fake")
    return path


LM3_TEXT = (
    "# 3D Landmark File\r\n\r\n3 landmarks:\r\n"
    "Outer left eyebrow\r\n-90.275 13.1 -6.515\r\n"
    "Nose tip\r\n0.5 -1.25 40\r\n"
    "Chin middle\r\n1 -60 10\r\n"
)
LM2_TEXT = (
    "# 2D Landmark File\r\n\r\n2 landmarks\r\n\r\nLabels:\r\nNose tip\r\nChin middle\r\n\r\n"
    "2D Image coordinates:\r\n512 700\r\n515.5 1300\r\n"
)


def write_bnd(path: Path, n: int = 83, separator: str = "\t\t", on=None) -> Path:
    """Rows 'index x y z' with row i = (10 i, i, -i, 0.5 i) and a trailing blank line; with
    ``on`` (a mesh's vertices) row i is vertex i mod len(on) and its coordinates instead, so
    the landmarks lie on that mesh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if on is None:
        rows = [[str(10 * i), f"{i:.6f}", f"{-i:.6f}", f"{0.5 * i:.6f}"] for i in range(n)]
    else:
        rows = [[str(i % len(on)), *(f"{x:.6f}" for x in on[i % len(on)])] for i in range(n)]
    path.write_text("\n".join(separator.join(row) for row in rows) + "\n\n")
    return path


FOURDME_COLUMNS = [
    "sub_ID", "fold_name", "fold", "Onset", "Apex", "Offset", "AUs", "Emotion", "eye blink",
    "Positive", "Negative", "Surprise", "Repression", "Others",
]


def write_4dme_xlsx(path: Path, rows: list[list], columns: list[str] = FOURDME_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns).to_excel(path, index=False, engine="openpyxl")
    return path
