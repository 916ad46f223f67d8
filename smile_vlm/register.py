"""Rigid registration of the frames of a 4D sequence onto the sequence's reference frame.

A head that turns or shifts between frames would otherwise reach the dynamic image: rank pooling
cannot tell rigid motion from facial motion, and a few degrees of head motion draw brow, nose and
mouth edges like an expression's. Every frame is therefore moved onto the first readable frame of
its sequence (the reference) by a rotation and a translation, before it is centred, cropped and
rendered. Nothing else is fitted: no scale and no deformation, so the expression stays.

Two ways, chosen by ``render.registration``:

- landmarks: Kabsch (Umeyama without scale) on the BU-4DFE landmarks that expressions move
  least, the four eye corners and the nose bridge and sides, with one trimming pass that drops
  a landmark whose residual is far above the others' (a tracked point that slipped).
- icp: a robust point-to-plane ICP, with a KD-tree, of the parts of the frame's face that
  expressions move least (the nose dorsum, the forehead above the brows, the temples; inside the
  crop) onto the reference's. What still moves there (forehead skin, a wrinkled nose) is weighed
  down by Tukey's biweight of the residuals. It starts from the nose tips put on top of each
  other, and a second round chooses the region again where the first put the frame, so that the
  same part of the face is used whatever the head's pose. Bounded iterations on a fixed
  subsample: the same frames give the same transform.

``auto`` is icp, and the landmarks' fit for a frame the mesh admits no rigid fit for, where it and
the reference have landmark files. The mesh comes first because it needs no landmark files: it
gives ``smile-vlm predict``, which sees none, the same frames as the render job (on the synthetic
BU-4DFE, whose landmarks are the mesh's own vertices, both leave almost no head motion in the
dynamic images: benchmarks/bench_registration.py). The frames are then put in their mean pose and
one centre by smile_vlm.sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh

METHODS = ("auto", "landmarks", "icp", "none")

# BU-4DFE's 83 points (0-based): eye corners 1, 5, 9, 13 and nose points 37-39 and 46-48 of the
# 1-based order (saddle, bridge sides, upper sides). The brows, lids, nostrils, mouth and jaw
# contour move with expressions; these barely do.
STABLE_BU83 = (0, 4, 8, 12, 36, 37, 38, 45, 46, 47)
MIN_LANDMARKS = 4
LANDMARK_OUTLIER_FACTOR = 3.0  # residual over the median that marks a slipped landmark

# The ICP region, relative to the nose tip (mm), inside the crop: the parts of the face that
# expressions move least. The nose dorsum (no lower than UPPER_FACE_FROM_MM, no wider than
# NOSE_HALF_WIDTH_MM each side, up through the glabella), the forehead from FOREHEAD_ABOVE_MM above
# the tip (above the brows, even raised) and the sides of the face from TEMPLES_BEYOND_MM out
# (temples, outside the eyes and cheeks). The mouth, jaw, cheeks, lids and brows are left out:
# with the lids and cheeks in the region, the apex of a smile pulled the fit by a millimetre, one
# way or the other depending on where the fit started, and with the brows in it a full brow raise
# did the same (benchmarks/bench_registration.py, tests/test_register.py). The reference's region
# reaches further, so that a frame's points near the region's edge still find their partners
# after up to ICP_EDGE_MARGIN_MM of motion.
UPPER_FACE_FROM_MM = -10.0
NOSE_HALF_WIDTH_MM = 12.0
FOREHEAD_ABOVE_MM = 65.0
TEMPLES_BEYOND_MM = 50.0
ICP_EDGE_MARGIN_MM = 10.0
ICP_SOURCE_POINTS = 2000  # a frame's region is subsampled to at most this many points
ICP_MIN_POINTS = 40  # six unknowns; MIN_CONDITION refuses points that do not pin them down
# What is left in the region that still moves (forehead skin, a wrinkled nose, scanner holes) is
# weighed down by Tukey's biweight of the point-to-plane residuals, its scale the residuals' MAD
# (as a standard deviation) and at least TUKEY_MIN_SCALE_MM, cut at TUKEY_C scales (95 %
# efficiency under Gaussian noise). Unlike keeping a fixed fraction of the closest pairs, the
# weights change smoothly with the pose, so the fit ends in the same place from either side.
TUKEY_C = 4.685
TUKEY_MIN_SCALE_MM = 0.05
ICP_RMS_FRACTION = 0.5  # the closest half of the pairs judge whether the fit succeeded
ICP_MAX_ITERATIONS = 40
ICP_STOP_RADIANS, ICP_STOP_MM = 1e-4, 1e-2
# The shared centre of a registered sequence: the top of a quadric fitted to the nose within
# APEX_RADIUS_MM of its most forward vertex (smile_vlm.sequence).
APEX_RADIUS_MM = 10.0
# Refusals: a pose change beyond these is no head motion within one sequence but a failed fit.
MAX_ROTATION_DEG = 30.0
MAX_INLIER_RMS_MM = 3.0
MIN_CONDITION = 1e-6  # smallest / largest eigenvalue of the point-to-plane normal equations


@dataclass(frozen=True)
class Rigid:
    """x -> rotation @ x + translation, in the mesh's own units."""

    rotation: np.ndarray
    translation: np.ndarray

    @staticmethod
    def identity() -> "Rigid":
        return Rigid(np.eye(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def inverse(self) -> "Rigid":
        return Rigid(self.rotation.T, -self.rotation.T @ self.translation)

    def then(self, other: "Rigid") -> "Rigid":
        """This transform followed by ``other``."""
        return Rigid(other.rotation @ self.rotation, other.rotation @ self.translation + other.translation)

    @property
    def angle_deg(self) -> float:
        cosine = np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0)
        return float(np.degrees(np.arccos(cosine)))


def kabsch(source: np.ndarray, target: np.ndarray) -> Rigid:
    """The rotation and translation (no scale) that best move ``source`` (N, 3) onto ``target``
    in the least-squares sense (Umeyama 1991 with the scale fixed at 1; no reflection)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    rotation = nearest_rotation((target - target_mean).T @ (source - source_mean))
    return Rigid(rotation, target_mean - rotation @ source_mean)


def nearest_rotation(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to a 3 x 3 matrix in the Frobenius norm (SVD; no reflection)."""
    u, _, vt = np.linalg.svd(matrix)
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0]) @ vt


def mean_pose(transforms: list[Rigid]) -> Rigid:
    """The chordal mean of rigid transforms: the mean rotation matrix projected back onto the
    rotations, and the mean translation."""
    rotation = nearest_rotation(np.mean([t.rotation for t in transforms], axis=0))
    return Rigid(rotation, np.mean([t.translation for t in transforms], axis=0))


def rotation_from_vector(omega: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation by |omega| radians about omega."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-15:
        return np.eye(3)
    k = np.asarray(omega, np.float64) / angle
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def read_stable_landmarks(path: str | Path) -> np.ndarray:
    """The STABLE_BU83 points of a BU-4DFE ``.bnd`` file, (k, 3) float64 in the mesh's units."""
    from smile_vlm.readers.bnd import read_bnd

    _, points = read_bnd(path)
    return points[list(STABLE_BU83)].astype(np.float64)


def fit_landmarks(points: np.ndarray, reference: np.ndarray, path: str | Path) -> Rigid:
    """Kabsch of a frame's stable landmarks onto the reference's, less any that slipped (mm)."""
    points, reference = np.asarray(points, np.float64), np.asarray(reference, np.float64)
    finite = np.isfinite(points).all(axis=1) & np.isfinite(reference).all(axis=1)
    if finite.sum() < MIN_LANDMARKS:
        raise ScanError(path, f"registration needs {MIN_LANDMARKS} finite landmarks, found {int(finite.sum())}")
    points, reference = points[finite], reference[finite]
    for sample in (points, reference):
        spread = np.linalg.svd(sample - sample.mean(axis=0), compute_uv=False)
        if spread[1] < 1.0:  # all on one line (or one point): a rotation about it is free
            raise ScanError(path, "landmarks are collinear; a rigid registration is not defined")
    transform = kabsch(points, reference)
    residual = np.linalg.norm(transform.apply(points) - reference, axis=1)
    kept = residual <= LANDMARK_OUTLIER_FACTOR * max(float(np.median(residual)), 0.1)
    if MIN_LANDMARKS <= kept.sum() < len(kept):
        transform = kabsch(points[kept], reference[kept])
    return checked(transform, path)


def checked(transform: Rigid, path: str | Path) -> Rigid:
    if transform.angle_deg > MAX_ROTATION_DEG:
        raise ScanError(path, f"registration turned the frame by {transform.angle_deg:.1f} degrees "
                              f"(more than {MAX_ROTATION_DEG:g}): not the same head pose")
    return transform


def upper_face(vertices: np.ndarray, nose_tip: np.ndarray, radius_mm: float, reach_mm: float) -> np.ndarray:
    """Mask of the vertices at most ``radius_mm`` from the nose tip on the nose dorsum (no lower
    than UPPER_FACE_FROM_MM, no wider than NOSE_HALF_WIDTH_MM), the forehead (FOREHEAD_ABOVE_MM up)
    or the temples (TEMPLES_BEYOND_MM to each side), each limit widened by ``reach_mm`` (all in mm)."""
    offset = vertices - nose_tip
    nose = (offset[:, 1] >= UPPER_FACE_FROM_MM - reach_mm) & (np.abs(offset[:, 0]) <= NOSE_HALF_WIDTH_MM + reach_mm)
    forehead = offset[:, 1] >= FOREHEAD_ABOVE_MM - reach_mm
    temples = (np.abs(offset[:, 0]) >= TEMPLES_BEYOND_MM - reach_mm) & (offset[:, 1] >= UPPER_FACE_FROM_MM - reach_mm)
    return (np.einsum("ij,ij->i", offset, offset) <= radius_mm**2) & (nose | forehead | temples)


def tukey_weights(residual: np.ndarray) -> np.ndarray:
    """Tukey's biweight of residuals (mm), scaled by their MAD (Huber's robust scale)."""
    scale = max(1.4826 * float(np.median(np.abs(residual))), TUKEY_MIN_SCALE_MM)
    u = residual / (TUKEY_C * scale)
    return np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)


def referenced_vertices(mesh: Mesh) -> np.ndarray:
    used = np.zeros(mesh.n_vertices, dtype=bool)
    used[mesh.faces.ravel()] = True
    return used


class IcpTarget:
    """The reference frame's upper face (mm), its normals and a KD-tree over it."""

    def __init__(self, mesh: Mesh, nose_tip_mm: np.ndarray, mm_per_unit: float, radius_mm: float):
        from scipy.spatial import cKDTree

        from smile_vlm.renderer import vertex_normals

        source = mesh.source if mesh.source is not None else "<mesh>"
        vertices = mesh.vertices.astype(np.float64) * mm_per_unit
        normals = vertex_normals(vertices, mesh.faces).astype(np.float64)
        region = referenced_vertices(mesh) & upper_face(vertices, nose_tip_mm, radius_mm, ICP_EDGE_MARGIN_MM)
        if region.sum() < ICP_MIN_POINTS:
            raise ScanError(source, f"reference frame has {int(region.sum())} points in its upper face, "
                                    f"registration needs {ICP_MIN_POINTS}")
        self.source, self.nose_tip = source, nose_tip_mm
        self.points, self.normals = vertices[region], normals[region]
        self.tree = cKDTree(self.points)


def fit_icp(vertices_mm: np.ndarray, start: Rigid, target: IcpTarget, radius_mm: float, path: str | Path) -> Rigid:
    """Tukey-weighted point-to-plane ICP of a frame's upper face (``upper_face``: nose dorsum,
    forehead, temples) onto the target's, from ``start`` (all in mm). The region is chosen where
    ``start`` puts the frame, in the reference's axes."""
    region = upper_face(start.apply(vertices_mm), target.nose_tip, radius_mm - ICP_EDGE_MARGIN_MM, 0.0)
    points = vertices_mm[region]
    if len(points) < ICP_MIN_POINTS:
        raise ScanError(path, f"{len(points)} points in the upper face, registration needs {ICP_MIN_POINTS}")
    points = points[:: max(1, int(np.ceil(len(points) / ICP_SOURCE_POINTS)))]
    rotation, translation = start.rotation, start.translation
    lever = np.r_[np.full(3, 1.0 / radius_mm), np.ones(3)]  # rotations in mm at the crop's edge
    for _ in range(ICP_MAX_ITERATIONS):
        moved = points @ rotation.T + translation
        _, nearest = target.tree.query(moved)
        normal = target.normals[nearest]
        residual = np.einsum("ij,ij->i", target.points[nearest] - moved, normal)
        weight = tukey_weights(residual)
        centre = weight @ moved / weight.sum()
        # linearised: residual + omega . ((p - c) x n) + t . n = 0 for every pair, weighted
        design = np.hstack([np.cross(moved - centre, normal), normal])
        weighted = design * weight[:, None]
        normal_matrix = design.T @ weighted
        eigenvalues = np.linalg.eigvalsh(normal_matrix * np.outer(lever, lever))
        if eigenvalues[0] < MIN_CONDITION * eigenvalues[-1]:
            raise ScanError(path, "the upper face is too featureless for a rigid registration "
                                  "(a rotation or shift of it changes nothing)")
        step = np.linalg.solve(normal_matrix, weighted.T @ residual)
        turn = rotation_from_vector(step[:3])
        rotation = turn @ rotation
        translation = turn @ (translation - centre) + centre + step[3:]
        if np.linalg.norm(step[:3]) < ICP_STOP_RADIANS and np.linalg.norm(step[3:]) < ICP_STOP_MM:
            break
    moved = points @ rotation.T + translation
    distance, _ = target.tree.query(moved)
    n_judged = max(ICP_MIN_POINTS // 2, int(ICP_RMS_FRACTION * len(points)))
    rms = float(np.sqrt(np.mean(np.sort(distance)[:n_judged] ** 2)))
    if rms > MAX_INLIER_RMS_MM:
        raise ScanError(path, f"registration left the upper face {rms:.1f} mm from the reference's "
                              f"(more than {MAX_INLIER_RMS_MM:g} mm): not the same face or pose")
    return checked(Rigid(rotation, translation), path)


class SequenceRegistration:
    """Registers the frames of one sequence, in reading order, onto the first one it is given.

    ``fit(mesh, nose_tip, landmark_path)`` returns the frame's transform (the identity for the
    reference) in the mesh's units, or raises ScanError; a frame that fails is the caller's to
    reject, and the next frame becomes the reference while there is none.
    """

    def __init__(self, method: str, mm_per_unit: float, radius_mm: float,
                 read_landmarks=read_stable_landmarks):
        if method not in METHODS or method == "none":
            raise ValueError(f"registration must be one of {[m for m in METHODS if m != 'none']}, got {method!r}")
        self.method, self.mm_per_unit, self.radius_mm = method, mm_per_unit, radius_mm
        self.read_landmarks = read_landmarks
        self.reference: Mesh | None = None
        self.reference_tip = self.reference_landmarks = None
        self.reference_landmark_path = ""
        self.target: IcpTarget | None = None

    def fit(self, mesh: Mesh, nose_tip: np.ndarray, landmark_path: str = "") -> Rigid:
        path = mesh.source if mesh.source is not None else "<mesh>"
        tip_mm = np.asarray(nose_tip, np.float64) * self.mm_per_unit
        if self.reference is None:
            if self.method == "icp":
                self.target = IcpTarget(mesh, tip_mm, self.mm_per_unit, self.radius_mm)
            if self.method == "landmarks":
                self.reference_landmarks = self.landmarks(landmark_path, path)
            self.reference, self.reference_tip, self.reference_landmark_path = mesh, tip_mm, landmark_path
            return Rigid.identity()
        if self.method == "landmarks":
            in_mm = fit_landmarks(self.landmarks(landmark_path, path), self.reference_landmarks, landmark_path)
        else:
            try:
                in_mm = self.fit_mesh(mesh, tip_mm, path)
            except ScanError:
                if self.method == "icp" or not (has_landmarks(landmark_path)
                                                and has_landmarks(self.reference_landmark_path)):
                    raise
                # auto: where the mesh admits no rigid fit, the landmarks' fit
                if self.reference_landmarks is None:
                    self.reference_landmarks = self.landmarks(self.reference_landmark_path, self.reference.source)
                in_mm = fit_landmarks(self.landmarks(landmark_path, path), self.reference_landmarks, landmark_path)
        return Rigid(in_mm.rotation, in_mm.translation / self.mm_per_unit)

    def fit_mesh(self, mesh: Mesh, tip_mm: np.ndarray, path) -> Rigid:
        """Two ICP rounds from the nose tips put on top of each other; the second chooses the region
        again where the first put the frame: the same part of the face whatever the head's pose."""
        if self.target is None:
            self.target = IcpTarget(self.reference, self.reference_tip, self.mm_per_unit, self.radius_mm)
        vertices = mesh.vertices[referenced_vertices(mesh)].astype(np.float64) * self.mm_per_unit
        fitted = Rigid(np.eye(3), self.reference_tip - tip_mm)
        for _ in range(2):
            fitted = fit_icp(vertices, fitted, self.target, self.radius_mm, path)
        return fitted

    def landmarks(self, landmark_path: str, path) -> np.ndarray:
        """A frame's stable landmarks in mm."""
        if not has_landmarks(landmark_path):
            raise ScanError(path, "registration: landmarks needs a landmark file (.bnd) for every frame; "
                                  "use auto or icp for datasets without them")
        return self.read_landmarks(landmark_path) * self.mm_per_unit


def nose_apex(vertices: np.ndarray, tip: np.ndarray, radius: float) -> np.ndarray:
    """The top (largest z) of the quadric z(x, y) fitted to the vertices within ``radius`` of the
    nose tip ``tip`` (a vertex), in the vertices' units; ``tip`` where no such top lies within
    ``radius``.

    The most forward vertex jumps from one vertex to the next as the pose changes by a fraction of
    a degree (by a vertex spacing, a millimetre at the real frame size and several on a coarse
    mesh); the quadric's top moves smoothly with the pose, so registered frames in the same pose
    share the same centre whatever pose their head had.
    """
    tip = np.asarray(tip, np.float64)
    offset = np.asarray(vertices, np.float64) - tip
    near = offset[(np.einsum("ij,ij->i", offset, offset) <= radius**2)]
    if len(near) < 6:
        return tip
    x, y, z = near.T
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, y, x * x, x * y, y * y]), z, rcond=None)[0]
    hessian = np.array([[2.0 * coef[3], coef[4]], [coef[4], 2.0 * coef[5]]])
    if not (np.linalg.eigvalsh(hessian) < 0.0).all():
        return tip
    top = np.linalg.solve(hessian, -coef[1:3])
    if float(np.hypot(*top)) > radius:
        return tip
    height = coef @ np.array([1.0, top[0], top[1], top[0] ** 2, top[0] * top[1], top[1] ** 2])
    return tip + np.array([top[0], top[1], height])


def has_landmarks(landmark_path) -> bool:
    return str(landmark_path or "").lower().endswith(".bnd")


def registered(mesh: Mesh, transform: Rigid) -> Mesh:
    """The mesh (and its landmarks) moved by ``transform``, in place."""
    mesh.vertices = transform.apply(mesh.vertices).astype(np.float32)
    mesh.landmarks = {name: transform.apply(point).astype(np.float32) for name, point in mesh.landmarks.items()}
    return mesh
