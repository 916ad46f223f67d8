"""Wavefront OBJ reader (candidate container of BP4D and 4DME frames; datasets.md §3.3, §5.4)."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.readers import resolve_texture, scan_texture

_MTLLIB = re.compile(rb"^[ \t]*mtllib[ \t]+(\S[^\r\n]*?)[ \t]*$", re.MULTILINE)
_MAP_KD = re.compile(r"^[ \t]*map_Kd[ \t]+(?:-\S+[ \t]+\S+[ \t]+)*(\S[^\r\n]*?)[ \t]*$", re.MULTILINE)


def read_obj(path: str | Path, *, require_texture: bool = False) -> Mesh:
    """Read an OBJ with trimesh (``process=False``), keeping texture coordinates when present.

    trimesh splits a vertex that carries different UVs in different faces, so UVs end up
    per vertex and ``face_uv == faces``; it also regroups faces, so face order is not the
    file's (triangle corners and their UVs are, see tests/test_readers_other.py). The texture is the ``map_Kd`` of the ``mtllib``,
    looked up in the scan folder ourselves so that trimesh never decodes the image.
    """
    import trimesh

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    try:
        # A file object without a resolver: trimesh parses geometry and UVs but loads no
        # material image (a 1040x1392 jpg per frame would dominate the read time).
        with _quiet_trimesh():
            loaded = trimesh.load(io.BytesIO(data), file_type="obj", process=False, force="mesh")
    except Exception as err:  # trimesh raises IndexError, ValueError, ... on broken files
        raise ScanError(path, f"OBJ parse failed: {type(err).__name__}: {err}") from None
    vertices = np.asarray(getattr(loaded, "vertices", np.empty((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(loaded, "faces", np.empty((0, 3))), dtype=np.int64)
    # trimesh keeps only referenced vertices, so an OBJ without faces has no vertices either.
    if len(faces) == 0 or len(vertices) == 0:
        raise ScanError(path, "no faces (no usable geometry)")
    if not np.isfinite(vertices).all():
        raise ScanError(path, "non-finite (NaN or inf) vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ScanError(path, f"face index out of range (there are {len(vertices)} vertices)")

    uv = getattr(getattr(loaded, "visual", None), "uv", None)
    face_uv = None
    if uv is not None and len(uv) == len(vertices):
        uv = np.asarray(uv, dtype=np.float64)
        if not np.isfinite(uv).all():
            raise ScanError(path, "non-finite (NaN or inf) texture coordinates")
        face_uv = faces
    else:
        uv = None
    return Mesh(
        vertices=vertices,
        faces=faces,
        uv=uv,
        face_uv=face_uv,
        texture=material_texture(data, path, require_texture=require_texture),
        source=path,
    )


def material_texture(data: bytes, path: Path, *, require_texture: bool = False) -> Path | None:
    """The map_Kd image of the mtllib named in the OBJ text ``data`` (only its head is needed)."""
    match = _MTLLIB.search(data)
    name = None
    if match is not None:
        library = resolve_texture(path.parent, match.group(1).decode("utf-8", "replace"), source=path, must_exist=False)
        if library.is_file():
            kd = _MAP_KD.search(library.read_text(encoding="utf-8", errors="replace"))
            name = kd.group(1) if kd else None
    return scan_texture(path, name, require_texture=require_texture,
                        why_none="no texture (no mtllib with a map_Kd image)")


@contextlib.contextmanager
def _quiet_trimesh():
    """Silence trimesh's per-file warnings (missing materials) while indexing thousands of frames."""
    logger = logging.getLogger("trimesh")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
