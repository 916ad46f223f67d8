"""Geometry sanity checks of a parsed scan and of its landmarks, run by the index on every mesh
it parses, so a file that parses but is no face never reaches rendering.

A reader checks syntax (every number read, every index in range); these check that the numbers
describe a surface: coordinates within a plausible extent, enough distinct vertices and faces
with an area (a scan whose vertices are all equal parses, and renders three black views), and
landmarks that index the mesh and lie on it. The limits are the least any scan has, not
quality thresholds: a real face scan has thousands of vertices, and its landmarks are vertices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh

# Scans are in millimetres (a face spans about 300) or metres; no scanner reaches 100 m, so a
# larger coordinate is a damaged number that still fits in float32.
MAX_COORDINATE = 1e5
# A tetrahedron's worth: fewer distinct points cannot span a surface with any depth.
MIN_DISTINCT_VERTICES = 4
MIN_FACES_WITH_AREA = 2
# A face counts as having an area when twice its area exceeds this share of the squared
# bounding-box diagonal: zero-area faces (repeated or collinear corners) stay far below it.
_AREA_SHARE = 1e-12
# A landmark farther from every vertex than this share of the bounding-box diagonal (about
# 15 mm on a face) is not on the scan: a landmark file of another scan, or a damaged value.
NEAR_SURFACE_SHARE = 0.05
_LANDMARK_CHUNK = 16  # landmarks per distance block: 16 x 35k vertices stays a few MB


def check_geometry(mesh: Mesh, path: str | Path) -> None:
    """ScanError unless ``mesh`` is a surface: plausible extent, distinct vertices, faces with area."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        raise ScanError(path, "non-finite (NaN or inf) vertex coordinates")
    largest = float(np.abs(vertices).max()) if vertices.size else 0.0
    if largest > MAX_COORDINATE:
        raise ScanError(path, f"vertex coordinate {largest:g} is beyond any scanner's extent ({MAX_COORDINATE:g})")
    distinct = _distinct_up_to(vertices, MIN_DISTINCT_VERTICES)
    if distinct < MIN_DISTINCT_VERTICES:
        raise ScanError(path, f"degenerate geometry: {distinct} distinct vertex position(s) "
                              f"(a surface needs at least {MIN_DISTINCT_VERTICES})")
    corners = vertices[np.asarray(mesh.faces)]
    doubled_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    with_area = int((doubled_area > _AREA_SHARE * _diagonal(vertices) ** 2).sum())
    if with_area < MIN_FACES_WITH_AREA:
        raise ScanError(path, f"degenerate geometry: {with_area} of {len(corners)} faces have an area "
                              f"(need at least {MIN_FACES_WITH_AREA}); the vertices are collinear or repeated")


def check_landmarks_on(mesh: Mesh, xyz: np.ndarray, path: str | Path, indices: np.ndarray | None = None,
                       labels: list[str] | None = None) -> None:
    """ScanError unless every landmark indexes the mesh (``indices``, .bnd) and lies near its surface.

    ``path`` is the landmark file; ``labels`` name the points in the error (.lm3), else rows do.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    names = [repr(label) for label in labels] if labels is not None else [f"row {k + 1}" for k in range(len(xyz))]
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if indices is not None and len(indices):
        bad = np.flatnonzero((np.asarray(indices) < 0) | (np.asarray(indices) >= len(vertices)))
        if len(bad):
            raise ScanError(path, f"{names[bad[0]]}: vertex index {int(indices[bad[0]])} but the scan "
                                  f"has only {len(vertices)} vertices")
    if not np.isfinite(xyz).all():
        k = int(np.flatnonzero(~np.isfinite(xyz).all(axis=1))[0])
        raise ScanError(path, f"{names[k]}: non-finite (NaN or inf) landmark coordinates")
    limit = NEAR_SURFACE_SHARE * _diagonal(vertices)
    # a .bnd point is its vertex's position: only points away from it need the nearest-vertex search
    unsure = np.arange(len(xyz))
    if indices is not None and len(indices) == len(xyz):
        unsure = np.flatnonzero(np.linalg.norm(xyz - vertices[np.asarray(indices)], axis=1) > limit)
    nearest = _nearest_distances(xyz[unsure], vertices)
    far = np.flatnonzero(nearest > limit)
    if len(far):
        k = int(unsure[far[0]])
        raise ScanError(path, f"{names[k]}: landmark {nearest[far[0]]:.3g} from the nearest vertex of the "
                              f"scan, more than {NEAR_SURFACE_SHARE:g} of its size ({limit:.3g}): not on this scan")


def _nearest_distances(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest vertex, a block of points at a time, one axis at a
    time (elementwise numpy: a BLAS product of these thin matrices is slower, and spawns threads)."""
    columns = [np.ascontiguousarray(vertices[:, axis]) for axis in range(3)]
    nearest = np.empty(len(points))
    for start in range(0, len(points), _LANDMARK_CHUNK):
        block = points[start:start + _LANDMARK_CHUNK]
        squared = (columns[0][None, :] - block[:, 0:1]) ** 2
        for axis in (1, 2):
            squared += (columns[axis][None, :] - block[:, axis:axis + 1]) ** 2
        nearest[start:start + len(block)] = np.sqrt(squared.min(axis=1))
    return nearest


def _diagonal(vertices: np.ndarray) -> float:
    return float(np.linalg.norm(vertices.max(axis=0) - vertices.min(axis=0)))


def _distinct_up_to(vertices: np.ndarray, wanted: int) -> int:
    """How many distinct rows ``vertices`` has, counting no further than ``wanted``: a pass per
    row found instead of sorting 35k vertices."""
    found: list[np.ndarray] = []
    differs = np.ones(len(vertices), dtype=bool)
    while len(found) < wanted and differs.any():
        row = vertices[int(np.argmax(differs))]
        found.append(row)
        differs &= (vertices != row).any(axis=1)
    return len(found)
