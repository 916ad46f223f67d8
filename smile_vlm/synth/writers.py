"""Writers for the raw formats of the five datasets, byte-compatible with the spec.

Each writer builds the whole file in memory and writes it atomically. Number formatting is
vectorised with one ``%`` over a repeated template, which is ~10x faster than a Python loop
per line. Coordinates are written with 4 decimals (mm), UVs with 6, like the real files.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from smile_vlm import atomic

COORD_DECIMALS = 4
UV_DECIMALS = 6


def _rows(values: np.ndarray, template: str, sep: str) -> str:
    """Format a (N, K) array as N lines of ``template`` joined by ``sep``."""
    values = np.asarray(values)
    if values.size == 0:
        return ""
    return sep.join([template] * values.shape[0]) % tuple(values.ravel().tolist())


def polygon_lines(polygons) -> str:
    """``a b c -1`` per polygon, comma-terminated except the last (§1.3).

    Sequences reuse one topology for every frame, so callers may format it once and pass
    the string to ``write_vrml`` instead of the polygon list.
    """
    if isinstance(polygons, str):
        return polygons
    return ",\n".join(" ".join(map(str, p.tolist())) + " -1" for p in polygons)


def write_vrml(path: str | Path, vertices: np.ndarray, polygons, uv: np.ndarray, polygon_uv,
               texture_name: str) -> None:
    """The BU-3DFE Tricorder VRML skeleton (§1.3) with per-corner UV indices.

    ``polygons`` and ``polygon_uv`` are lists of equally long index arrays (0-based);
    ``uv`` has the VRML bottom-left origin.
    """
    c = f"%.{COORD_DECIMALS}f"
    t = f"%.{UV_DECIMALS}f"
    points = _rows(vertices, f"{c} {c} {c}", ",\n")
    tex_points = _rows(uv, f"{t} {t}", ",\n")
    text = (
        "#VRML V2.0 utf8\n"
        "#Tricorder Technology plc - 2000\n"
        "DEF Tricorder_object Transform {\n"
        "  children [\n"
        "    Shape {\n"
        "      appearance Appearance {\n"
        "        texture ImageTexture {\n"
        f'          url "{texture_name}"\n'
        "          repeatS FALSE\n"
        "          repeatT FALSE\n"
        "        }\n"
        "      }\n"
        "      geometry IndexedFaceSet {\n"
        "        ccw TRUE\n"
        "        solid FALSE\n"
        "        convex TRUE\n"
        "        creaseAngle 1.57\n"
        "        coord Coordinate {\n"
        "          point [\n"
        f"{points}\n"
        "          ]\n"
        "        }\n"
        "        coordIndex [\n"
        f"{polygon_lines(polygons)}\n"
        "        ]\n"
        "        texCoord TextureCoordinate {\n"
        "          point [\n"
        f"{tex_points}\n"
        "          ]\n"
        "        }\n"
        "        texCoordIndex [\n"
        f"{polygon_lines(polygon_uv)}\n"
        "        ]\n"
        "      }\n"
        "    }\n"
        "  ]\n"
        "}\n"
        "DEF Tricorder_Camera_Front Viewpoint { position 0 0 300 orientation 0 0 1 0 fieldOfView 0.785398 }\n"
        "DEF Tricorder_Camera_Back Viewpoint { position 0 0 -300 orientation 0 1 0 3.14159 fieldOfView 0.785398 }\n"
    )
    atomic.write_text(path, text)


def write_bnd(path: str | Path, indices: np.ndarray, xyz: np.ndarray) -> None:
    """83 rows ``<0-based vertex index> <x> <y> <z>``, LF, no header (§1.5, §2.4)."""
    indices = np.asarray(indices, dtype=np.int64)
    xyz = np.asarray(xyz, dtype=np.float64)
    table = np.column_stack([indices.astype(np.float64), xyz])
    body = "\n".join(f"{int(i)} {x:.6f} {y:.6f} {z:.6f}" for i, x, y, z in table)
    atomic.write_text(path, body + "\n")


def write_bnt(path: str | Path, grid_xyz: np.ndarray, valid: np.ndarray, uv_top_left: np.ndarray,
              texture_name: str, zmin: float = -1.0e9) -> None:
    """Bosphorus range grid (§4.3): header + 5 float64 planes X, Y, Z, U, V, row 0 = bottom.

    ``grid_xyz`` (R, C, 3) and ``valid`` (R, C) are given bottom row first; invalid points get
    X = Y = Z = zmin while U, V stay valid everywhere (top-left origin, as in the png).
    """
    rows, cols = valid.shape
    planes = np.empty((5, rows, cols), dtype="<f8")
    for k in range(3):
        planes[k] = np.where(valid, grid_xyz[..., k], zmin)
    planes[3] = uv_top_left[..., 0]
    planes[4] = uv_top_left[..., 1]
    name = texture_name.encode("ascii")
    header = struct.pack("<HHdH", rows, cols, zmin, len(name)) + name + struct.pack("<I", planes.size)
    atomic.write_bytes(path, header + planes.tobytes())


def write_lm3(path: str | Path, landmarks: dict[str, np.ndarray]) -> None:
    """Bosphorus 3D landmarks (§4.4), CRLF."""
    lines = ["# 3D Landmark File", "", f"{len(landmarks)} landmarks:"]
    for label, xyz in landmarks.items():
        x, y, z = (float(v) for v in xyz)
        lines += [label, f"{x:.3f} {y:.3f} {z:.3f}"]
    atomic.write_bytes(path, ("\r\n".join(lines) + "\r\n").encode("ascii"))


def write_lm2(path: str | Path, landmarks: dict[str, np.ndarray]) -> None:
    """Bosphorus 2D landmarks in png pixels, top-left origin (§4.5), CRLF."""
    lines = ["# 2D Landmark File", "", f"{len(landmarks)} landmarks", "", "Labels:"]
    lines += list(landmarks)
    lines += ["", "2D Image coordinates:"]
    lines += [f"{float(p[0]):.3f} {float(p[1]):.3f}" for p in landmarks.values()]
    atomic.write_bytes(path, ("\r\n".join(lines) + "\r\n").encode("ascii"))


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
              face_uv: np.ndarray | None = None) -> None:
    """Wavefront OBJ: ``v``, ``vt`` (bottom-left origin), ``f a/b c/d e/f`` (1-based)."""
    c = f"%.{COORD_DECIMALS}f"
    parts = [_rows(vertices, f"v {c} {c} {c}", "\n")]
    faces = np.asarray(faces, dtype=np.int64) + 1
    if uv is not None:
        t = f"%.{UV_DECIMALS}f"
        parts.append(_rows(uv, f"vt {t} {t}", "\n"))
        corners = np.stack([faces, np.asarray(face_uv, dtype=np.int64) + 1], axis=-1)  # (F, 3, 2)
        parts.append(_rows(corners.reshape(len(faces), 6), "f %d/%d %d/%d %d/%d", "\n"))
    else:
        parts.append(_rows(faces, "f %d %d %d", "\n"))
    atomic.write_text(path, "\n".join(p for p in parts if p) + "\n")


def write_image(path: str | Path, image: np.ndarray, quality: int = 90) -> None:
    """A texture as .bmp/.jpg/.png; JPEG quality fixed so bytes are reproducible."""
    from PIL import Image

    path = Path(path)
    buffer = io.BytesIO()
    suffix = path.suffix.lower()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if suffix in (".jpg", ".jpeg"):
        pil.save(buffer, format="JPEG", quality=quality)
    elif suffix == ".png":
        pil.save(buffer, format="PNG")
    elif suffix == ".bmp":
        pil.save(buffer, format="BMP")
    else:
        raise ValueError(f"unsupported texture format: {path.name}")
    atomic.write_bytes(path, buffer.getvalue())


def write_au_occ(path: str | Path, frames, occurring, coded) -> None:
    """A BP4D AU-occurrence CSV (AUCoding/AU_OCC/<SID>_<Tk>.csv): header ``0,1,...,99``, one row per
    frame; column 0 the frame number, column i AU i: 1 occurs, 0 does not, 9 not coded.

    ``occurring``: per frame, the AU numbers that occur; ``coded``: the AU numbers coded at all.
    """
    coded = set(coded)
    lines = [",".join(str(i) for i in range(100))]
    for frame, present in zip(frames, occurring, strict=True):
        cells = [("1" if au in present else "0") if au in coded else "9" for au in range(1, 100)]
        lines.append(",".join([str(int(frame)), *cells]))
    atomic.write_text(path, "\n".join(lines) + "\n")


FOURDME_COLUMNS = ("sub_ID", "fold_name", "fold", "Onset", "Apex", "Offset", "AUs", "Emotion",
                   "eye blink", "Positive", "Negative", "Surprise", "Repression", "Others")


def write_4dme_xlsx(path: str | Path, rows: list[dict]) -> None:
    """The micro-expression labelling sheet (§5.2), one row per clip, via pandas + openpyxl."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(FOURDME_COLUMNS))
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        frame.to_excel(writer, index=False, sheet_name="Sheet1")
    atomic.write_bytes(path, _fixed_zip_times(buffer.getvalue()))


def _fixed_zip_times(xlsx: bytes) -> bytes:
    """Rewrite the xlsx zip with fixed timestamps and core-properties dates.

    openpyxl stamps the current time into docProps/core.xml and into every zip entry; fixing
    both makes the same seed give identical bytes.
    """
    import re
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(xlsx))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", b"2000-01-01T00:00:00Z", data)
            fixed = zipfile.ZipInfo(info.filename, date_time=(2000, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            target.writestr(fixed, data)
    return out.getvalue()
