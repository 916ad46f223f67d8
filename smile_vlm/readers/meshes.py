"""One entry for every mesh format: the reader is chosen by the file's extension."""

from __future__ import annotations

from pathlib import Path

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh

MESH_EXTENSIONS = (".wrl", ".obj", ".bnt")


def read_mesh(path: str | Path, *, require_texture: bool = False, max_bytes: int | None = None) -> Mesh:
    """Read a ``.wrl`` (VRML 2.0), ``.obj`` or Bosphorus ``.bnt`` scan as a triangle mesh.

    ``max_bytes`` is the per-file size limit (default index.max_file_mb); extensions match
    in any case ('.WRL' copied from a DVD is a VRML file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".wrl":
        from smile_vlm.readers.vrml import read_vrml

        return read_vrml(path, require_texture=require_texture, max_bytes=max_bytes)
    if suffix == ".obj":
        from smile_vlm.readers.obj import read_obj

        return read_obj(path, require_texture=require_texture, max_bytes=max_bytes)
    if suffix == ".bnt":
        from smile_vlm.readers.bosphorus import bnt_to_mesh, read_bnt

        return bnt_to_mesh(read_bnt(path, max_bytes=max_bytes), path, require_texture=require_texture)
    raise ScanError(path, f"unsupported mesh extension {path.suffix!r} (expected {', '.join(MESH_EXTENSIONS)})")
