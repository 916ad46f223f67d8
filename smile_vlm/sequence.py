"""A 4D sequence rendered frame by frame: frames registered rigidly into one head pose and one
centre (or, without registration, a smoothed nose-tip track), one image support per view.

Each sampled frame is parsed once per render job. The first pass reads the frames for their
nose tips and rigid transforms (smile_vlm.register; the centre needs every tip before any frame
can be centred) and keeps the parsed meshes; the second renders them, moved by their transforms,
on that centre. Parsing is most of a render job's CPU
(benchmarks/bench_render.py --shard), so a second read of each frame would nearly double it.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import pandas as pd

from smile_vlm.dynamic import apply_support, common_support
from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.normalize import NOSE_TIP_KEYS, canonicalize, millimetres_per_unit, nose_tip, smooth_track
from smile_vlm.register import APEX_RADIUS_MM, Rigid, SequenceRegistration, mean_pose, nose_apex, registered

# Frames of a 4D sequence are cropped to this many crop radii (whole triangles), so that every
# triangle that reaches into the crop sphere is drawn; the sphere itself is then cut per pixel
# (``Renderer.render_with_support``). 1.25 covers triangles up to 0.25 radii (22 mm at 90 mm)
# across the sphere's surface, far more than any scan's edge length.
SEQUENCE_CROP_MARGIN = 1.25
# Parsed frames kept between the two passes. 16 sampled 35k-vertex BU-4DFE frames take ~61 MB
# (3.8 MB each); the cap matters for `frames: all`, where the frames beyond it are read again
# (the same file gives the same mesh) instead of holding a whole 100-frame sequence (~380 MB).
KEEP_PARSED_MB = 256
# A registered frame keeps the vertices this many apex radii (register.APEX_RADIUS_MM) around its
# nose tip, to find the tip again in the mean pose: the most forward vertex of a pose some
# degrees away lies among them.
NOSE_PATCH_RADII = 3.0


def canonicalize_wide(mesh: Mesh, settings: dict) -> Mesh:
    """``canonicalize`` with a crop of SEQUENCE_CROP_MARGIN radii, in the same unit-radius frame.

    Whole triangles are kept as before, but out to beyond the crop sphere, so that the sphere
    is then cut per pixel (``Renderer.render_with_support``) on a surface with no holes at it.
    """
    radius_mm = float(settings["radius_mm"])
    wide = canonicalize(mesh, {**settings, "radius_mm": radius_mm * SEQUENCE_CROP_MARGIN})
    return dataclasses.replace(
        wide,
        vertices=wide.vertices * np.float32(SEQUENCE_CROP_MARGIN),
        landmarks={name: point * np.float32(SEQUENCE_CROP_MARGIN) for name, point in wide.landmarks.items()},
    )


def render_sequence(job, chosen: pd.DataFrame, keep_parsed_mb: float = KEEP_PARSED_MB) -> list[tuple[int, np.ndarray]]:
    """(frame, views) of each readable frame of ``chosen``, centred and cut to one support per
    view (``dynamic.common_support``).

    Registered (``job.registration`` other than "none"), the frames are moved rigidly onto the
    first and then into the mean pose of them all, and share one centre (the median of their
    nose tips, found in the mean pose: ``tip_in_pose``): the head no longer moves, so neither
    does the crop, even where an expression deforms the nose. Unregistered, each frame is
    centred on the smoothed track of the nose tips, which follows slow head motion.

    ``job`` is the render job (render.ShardJob): ``load(row)`` and ``render(mesh, path, wide=True)``
    return None after recording a reject; ``reject(error, path)``; ``nose_smoothing``;
    ``registration``; ``settings``.
    """
    registration = None
    if job.registration != "none":
        registration = SequenceRegistration(job.registration, millimetres_per_unit(job.settings),
                                            float(job.settings["radius_mm"]))
    frames, tips = read_frames(job, chosen, keep_parsed_mb, registration)
    to_mean = None
    if registration is None:
        track = smooth_track(np.array(tips).reshape(-1, 3), job.nose_smoothing)
    elif frames:
        to_mean, centre = shared_pose_and_centre([transform for _, _, transform in frames], tips, job.settings)
        track = np.repeat(centre[None], len(tips), axis=0)
    else:
        track = np.zeros((0, 3))
    rendered = render_frames(job, frames, track, to_mean)
    if not rendered:
        return []
    support = common_support(np.stack([inside for _, _, inside in rendered]))
    return [(frame, apply_support(views, support & inside)) for frame, views, inside in rendered]


def read_frames(job, chosen: pd.DataFrame, keep_parsed_mb: float,
                registration: SequenceRegistration | None = None) -> tuple[deque, list]:
    """First pass: (row, parsed mesh or None, rigid transform or None) of each frame whose nose tip
    (and transform) was found, and the tips. A kept mesh is registered already, and its tip is
    found again on it: the estimate depends on the head's pose. Registered, a frame gives its
    ``nose_patch`` instead.

    A mesh is kept for the second pass while the kept meshes fit in ``keep_parsed_mb``; None
    stands for a frame the second pass reads again.
    """
    budget, kept = keep_parsed_mb * 2**20, 0
    frames, tips = deque(), []
    for row in chosen.itertuples():
        mesh = job.load(row)
        if mesh is None:
            continue
        try:
            tip, transform = nose_tip(mesh), None
            if registration is not None:
                transform = registration.fit(mesh, tip, row.landmark_path)
                tip = nose_patch(registered(mesh, transform), job.settings)
        except Exception as error:  # any per-file failure: reject it, keep the sequence going
            job.reject(error, row.mesh_path)
            continue
        tips.append(tip)
        size = mesh_bytes(mesh)
        keep = kept + size <= budget
        kept += size if keep else 0
        frames.append((row, mesh if keep else None, transform))
    return frames, tips


def nose_patch(mesh: Mesh, settings: dict) -> np.ndarray:
    """A registered frame's nose-tip landmark (3,), or, where its scan has none, its vertices
    within NOSE_PATCH_RADII apex radii of its most forward vertex (k, 3), for ``tip_in_pose``."""
    tip = nose_tip(mesh)
    if any(key in mesh.landmarks for key in NOSE_TIP_KEYS):
        return tip
    radius = NOSE_PATCH_RADII * APEX_RADIUS_MM / millimetres_per_unit(settings)
    offset = mesh.vertices - tip
    return mesh.vertices[np.einsum("ij,ij->i", offset, offset) <= radius**2].astype(np.float64)


def shared_pose_and_centre(transforms: list[Rigid], patches: list[np.ndarray], settings: dict) -> tuple[Rigid, np.ndarray]:
    """The move of registered frames from the first frame's pose into their mean pose, and their
    shared centre there: the median of their nose tips (``tip_in_pose``) in the mesh's units.

    The first frame's own head pose is as random as any frame's: the frames are put in their mean
    pose instead, so that the sequence's pose does not hang on one frame.
    """
    to_mean = mean_pose(transforms).inverse()
    apex_radius = APEX_RADIUS_MM / millimetres_per_unit(settings)
    return to_mean, np.median([tip_in_pose(patch, to_mean, apex_radius) for patch in patches], axis=0)


def register_in_memory(meshes: list[Mesh], method: str, settings: dict) -> tuple[list[Mesh], np.ndarray]:
    """Frames held in memory (the pretraining corpus's sequences) registered as the render job
    registers a sequence's: moved in place onto the first and into their mean pose; with their
    shared centre. A frame that admits no rigid fit is left out, as the render job rejects it."""
    registration = SequenceRegistration(method, millimetres_per_unit(settings), float(settings["radius_mm"]))
    kept, transforms, patches = [], [], []
    for mesh in meshes:
        try:
            transform = registration.fit(mesh, nose_tip(mesh))
        except ScanError:
            continue
        kept.append(registered(mesh, transform))
        transforms.append(transform)
        patches.append(nose_patch(mesh, settings))
    if not kept:
        return [], np.zeros(3)
    to_mean, centre = shared_pose_and_centre(transforms, patches, settings)
    return [registered(mesh, to_mean) for mesh in kept], centre


def tip_in_pose(tip: np.ndarray, pose: Rigid, apex_radius: float) -> np.ndarray:
    """A registered frame's nose tip once the frame is moved by ``pose``: a landmark's moved with
    it; from a nose patch (``read_frames``), the top of the nose's quadric (``register.nose_apex``)
    at the most forward point of the moved patch.

    The shared centre must be the same point of the face whatever pose the head had: the most
    forward vertex is not (it jumps from vertex to vertex as the pose it is taken in changes, and
    the first frame's pose is as random as any frame's head motion), and at the real frame size a
    fraction of a millimetre of centre decorrelates a dynamic image
    (benchmarks/bench_registration.py, "constant offset").
    """
    if tip.ndim == 1:
        return pose.apply(tip)
    patch = pose.apply(tip)
    return nose_apex(patch, patch[np.argmax(patch[:, 2])], apex_radius)


def render_frames(job, frames: deque, track: np.ndarray,
                  to_mean: Rigid | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Second pass: (frame, views, inside-sphere pixels) per frame, each centred on its track point
    and, registered, moved from the first frame's pose to the mean pose (``to_mean``).

    Frames leave the queue as they are rendered, so memory falls as the pass goes on.
    """
    rendered = []
    for tip in track:
        row, mesh, transform = frames.popleft()
        if mesh is None:  # read again, so moved again
            mesh = job.load(row)
            if mesh is None:
                continue
            if transform is not None:
                mesh = registered(mesh, transform)
        if to_mean is not None:
            mesh = registered(mesh, to_mean)
        mesh.landmarks["nose_tip"] = tip.astype(np.float32)
        result = job.render(mesh, row.mesh_path, wide=True)
        mesh = None  # released before the next frame is read
        if result is not None:
            rendered.append((row.frame, *result))
    return rendered


def mesh_bytes(mesh: Mesh) -> int:
    """Bytes of a mesh's arrays (what keeping it costs)."""
    arrays = (mesh.vertices, mesh.faces, mesh.uv, mesh.face_uv)
    return sum(array.nbytes for array in arrays if array is not None)
