"""The in-memory triangle mesh every reader returns and every renderer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Mesh:
    """A triangulated scan.

    vertices  (V, 3) float32, in the dataset's own units (millimetres for BU and Bosphorus).
    faces     (F, 3) int64, 0-based vertex indices; polygons are fan-triangulated by the readers.
    uv        (T, 2) float32 texture coordinates with the origin at the image's bottom-left
              (VRML/OBJ/OpenGL convention; readers of top-left formats flip v), or None.
    face_uv   (F, 3) int64 indices into ``uv`` per triangle corner (UVs are per face-corner in
              BU-3DFE: there are more UVs than vertices), or None.
    texture   resolved texture image path, always inside the scan's own folder, or None.
    source    the file the mesh was read from.
    landmarks named or numbered 3D points in the same frame as ``vertices`` (may be empty).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    face_uv: np.ndarray | None = None
    texture: Path | None = None
    source: Path | None = None
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if self.uv is not None:
            self.uv = np.asarray(self.uv, dtype=np.float32).reshape(-1, 2)
        if self.face_uv is not None:
            self.face_uv = np.asarray(self.face_uv, dtype=np.int64).reshape(-1, 3)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])
