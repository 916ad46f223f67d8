"""Canonical face frame: nose tip at the origin, face toward +z, y up, unit crop radius.

The readers already return every dataset with the face looking toward +z and y up (Bosphorus
rows are flipped by its reader), so no rotation is estimated here: only the nose tip, a
spherical crop that removes hair, shoulders and scanner clutter, and a scale that makes all
datasets comparable for the renderer's fixed camera. The frames of a 4D sequence are first
moved rigidly into one head pose (smile_vlm.register, called by smile_vlm.sequence), so that head
motion within a sequence is removed before they are centred here.
"""

from __future__ import annotations

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh

MILLIMETRES_PER_UNIT = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
NOSE_TIP_KEYS = ("nose_tip", "Nose tip")  # ours, and the Bosphorus .lm3 label


def canonicalize(mesh: Mesh, settings: dict) -> Mesh:
    """Return a new Mesh centred on the nose tip, cropped to ``radius_mm`` and scaled by 1/radius.

    settings (the complete render section, ``settings.complete("render", ...)``):
      radius_mm  crop radius around the nose tip, in millimetres (render.radius_mm).
      units      unit of the input vertices: "mm" (BU, Bosphorus), "cm" (ICT-FaceKit), "m" (render.units).
      scale      millimetres per input unit; overrides ``units`` when given.
    """
    radius_mm = float(settings["radius_mm"])
    if radius_mm <= 0:
        raise ValueError(f"radius_mm must be positive, got {radius_mm}")
    mm_per_unit = millimetres_per_unit(settings)
    source = mesh.source if mesh.source is not None else "<mesh>"

    if mesh.n_faces == 0 or mesh.n_vertices == 0:
        raise ScanError(source, "mesh has no faces")
    if mesh.faces.min() < 0 or mesh.faces.max() >= mesh.n_vertices:
        raise ScanError(source, "face index out of range")
    if mesh.face_uv is not None and mesh.uv is not None and len(mesh.face_uv) and (
        mesh.face_uv.shape != mesh.faces.shape or mesh.face_uv.min() < 0 or mesh.face_uv.max() >= len(mesh.uv)
    ):
        raise ScanError(source, "texture-coordinate index out of range")
    referenced = np.zeros(mesh.n_vertices, dtype=bool)
    referenced[mesh.faces.ravel()] = True
    vertices_mm = mesh.vertices.astype(np.float64) * mm_per_unit
    if not np.isfinite(vertices_mm[referenced]).all():
        raise ScanError(source, "non-finite vertex coordinates")

    nose_tip = _landmark_nose_tip(mesh)
    if nose_tip is not None:
        nose_tip = nose_tip * mm_per_unit
    else:
        nose_tip = estimate_nose_tip(vertices_mm[referenced])

    centred = vertices_mm - nose_tip
    inside = np.einsum("ij,ij->i", centred, centred) <= radius_mm**2
    kept_faces = inside[mesh.faces].all(axis=1)
    if not kept_faces.any():
        raise ScanError(source, f"no face lies within {radius_mm:g} mm of the nose tip")

    faces = mesh.faces[kept_faces]
    kept_vertices, faces = _compact(faces, mesh.n_vertices)
    uv, face_uv = None, None
    if mesh.uv is not None and mesh.face_uv is not None:
        kept_uv, face_uv = _compact(mesh.face_uv[kept_faces], len(mesh.uv))
        uv = mesh.uv[kept_uv]
    elif mesh.uv is not None and len(mesh.uv) == mesh.n_vertices:
        uv = mesh.uv[kept_vertices]  # per-vertex UVs follow their vertices

    landmarks = {
        name: ((np.asarray(point, dtype=np.float64) * mm_per_unit - nose_tip) / radius_mm).astype(np.float32)
        for name, point in mesh.landmarks.items()
    }
    return Mesh(
        vertices=(centred[kept_vertices] / radius_mm).astype(np.float32),
        faces=faces,
        uv=uv,
        face_uv=face_uv,
        texture=mesh.texture,
        source=mesh.source,
        landmarks=landmarks,
    )


def estimate_nose_tip(vertices: np.ndarray) -> np.ndarray:
    """Nose tip of a face looking toward +z: the max-z point of the central region.

    A median/MAD guard on the distance to the median point first drops far-away clutter
    (a stray scanner point in front of the face would otherwise win the max-z test), and the
    central region (the half of the remaining points closest to the median in x-y) excludes
    shoulders or hair that can reach further toward the camera than the nose.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    centre = np.median(vertices, axis=0)
    distance = np.linalg.norm(vertices - centre, axis=1)
    median_distance = np.median(distance)
    spread = 1.4826 * np.median(np.abs(distance - median_distance))  # MAD as a standard deviation
    kept = vertices[distance <= median_distance + 4.0 * max(spread, 1e-9)]
    planar = np.linalg.norm(kept[:, :2] - centre[:2], axis=1)
    central = kept[planar <= np.median(planar)]
    return central[np.argmax(central[:, 2])]


def nose_tip(mesh: Mesh) -> np.ndarray:
    """The scan's nose tip: its landmark when the dataset has one, else the geometric estimate."""
    point = _landmark_nose_tip(mesh)
    return point if point is not None else estimate_nose_tip(mesh.vertices)


def smooth_track(points: np.ndarray, window: int) -> np.ndarray:
    """Running median of a (T, 3) trajectory over ``window`` frames (edges use what exists).

    Canonicalising every frame of a sequence on its own nose-tip estimate makes the face jump by
    the estimate's noise (a vertex spacing or more) from frame to frame; rank pooling then turns
    those jumps into bright silhouette edges that drown the expression. A running median keeps
    slow head motion and removes the jitter.
    """
    points = np.asarray(points, dtype=np.float64)
    if window <= 1 or len(points) <= 1:
        return points
    half = window // 2
    return np.stack([np.median(points[max(0, t - half): t + half + 1], axis=0) for t in range(len(points))])


def _landmark_nose_tip(mesh: Mesh) -> np.ndarray | None:
    for key in NOSE_TIP_KEYS:
        point = mesh.landmarks.get(key)
        if point is not None:
            point = np.asarray(point, dtype=np.float64).reshape(3)
            if np.isfinite(point).all():
                return point
    return None


def millimetres_per_unit(settings: dict) -> float:
    """Millimetres per unit of the raw vertices: ``scale`` when given, else that of ``units``."""
    if settings.get("scale") is not None:
        return float(settings["scale"])
    units = settings["units"]
    if units not in MILLIMETRES_PER_UNIT:
        raise ValueError(f"units must be one of {sorted(MILLIMETRES_PER_UNIT)}, got {units!r}")
    return MILLIMETRES_PER_UNIT[units]


def _compact(indices: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the items ``indices`` refers to; return (kept item ids, re-numbered indices)."""
    used = np.zeros(n_items, dtype=bool)
    used[indices.ravel()] = True
    kept = np.flatnonzero(used)
    new_id = np.full(n_items, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    return kept, new_id[indices]
