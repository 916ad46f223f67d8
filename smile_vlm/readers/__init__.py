"""Raw readers of the five datasets; every one returns plain arrays or a ``Mesh``.

Bad input always raises ``ScanError(path, reason)``. The package's face: ``files`` (bounded reads),
``textures`` (texture names resolved in the scan's folder) and ``meshes`` (``read_mesh``, by
extension) are re-exported here; the format readers (``vrml``, ``obj``, ``bosphorus``, ``bnd``,
``fourdme``) are imported inside ``read_mesh`` so that each can import these from here without a cycle.
"""

from __future__ import annotations

from smile_vlm.readers.files import (
    DEFAULT_MAX_FILE_MB,
    FLOAT32_MAX,
    check_regular,
    check_values,
    file_kind,
    max_bytes_of,
    read_ends,
    read_limited,
)
from smile_vlm.readers.meshes import MESH_EXTENSIONS, read_mesh
from smile_vlm.readers.textures import resolve_texture, scan_texture

__all__ = ["DEFAULT_MAX_FILE_MB", "FLOAT32_MAX", "MESH_EXTENSIONS", "check_regular", "check_values", "file_kind",
           "max_bytes_of", "read_ends", "read_limited", "read_mesh", "resolve_texture", "scan_texture"]
