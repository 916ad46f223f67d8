"""Each dataset's own raw directory layout, filled with synthetic faces.

Every random draw comes from a generator seeded by (seed, dataset, subject, sample), so the
same settings give identical bytes, and a dataset's subjects do not depend on each other.
"""

from __future__ import annotations

import copy
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from smile_vlm import atomic
from smile_vlm.readers.names import BOSPHORUS_EMOTIONS, BP4D_TASK_CLASSES, BU3DFE_EXPRESSIONS, BU4DFE_FOLDERS
from smile_vlm.settings import section_defaults
from smile_vlm.synth import writers
from smile_vlm.synth.captions import active_units
from smile_vlm.synth.expressions import ACTION_UNITS, EMOTIONS, INTENSITY_SCALE, MICRO_CLASSES, MICRO_TEMPLATES, micro_labels
from smile_vlm.synth.face import FaceModel
from smile_vlm.synth.identity import sample_identity
from smile_vlm.synth.au_tables import TABLES
from smile_vlm.synth.motion import HEAD_MOTIONS, random_pose, sequence_poses
from smile_vlm.synth.realisation import Realiser
from smile_vlm.synth.units import parse_unit

DATASETS = ("bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme")

# The schema's synthetic section; `root` is where the workflow writes, not a generator setting.
DEFAULTS = {key: value for key, value in section_defaults("synthetic").items() if key != "root"}

_DATASET_CODE = {name: k for k, name in enumerate(DATASETS)}
# Each dataset's spelling of a class, from the readers' tables (the inverse of what they parse).
BU4DFE_FOLDER_OF = {label: folder for folder, label in BU4DFE_FOLDERS.items()}
BU3DFE_CODE_OF = {label: code for code, label in BU3DFE_EXPRESSIONS.items()}
BOSPHORUS_CODE_OF = {label: code for code, label in BOSPHORUS_EMOTIONS.items()}
# The tasks written, in order, with the class each one shows: the default task map.
BP4D_TASKS = BP4D_TASK_CLASSES
BOSPHORUS_LFAU = (9, 10, 12, 15, 16, 17, 20, 23, 24, 25, 26, 27)


def resolve_settings(settings: dict | None) -> dict:
    """Defaults overlaid with the caller's settings (nested dicts merged one level deep)."""
    merged = copy.deepcopy(DEFAULTS)
    for key, value in (settings or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    _check(merged)
    return merged


def _check(settings: dict) -> None:
    """Refuse, before anything is written, choices the schema's enums would refuse."""
    unknown = [name for name in settings["au_tables"] if name not in TABLES]
    if unknown or not settings["au_tables"]:
        raise ValueError(f"synthetic.au_tables {settings['au_tables']}: choose one or more of {', '.join(TABLES)}")
    kind = settings["head_motion"]["kind"]
    if kind not in HEAD_MOTIONS:
        raise ValueError(f"synthetic.head_motion.kind {kind!r}: choose one of {', '.join(HEAD_MOTIONS)}")


def subject_ids(dataset: str, n: int) -> list[str]:
    """Female IDs first then male, in each dataset's own spelling."""
    if dataset == "bosphorus":
        return [f"bs{k:03d}" for k in range(n)]
    if dataset == "4dme":
        return [f"S{k + 1:02d}" for k in range(n)]
    digits = 4 if dataset == "bu3dfe" else 3
    n_female = (n + 1) // 2 + (n // 10)
    return [f"F{k + 1:0{digits}d}" for k in range(n_female)] + [f"M{k + 1:0{digits}d}" for k in range(n - n_female)]


def rng_for(settings: dict, dataset: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(settings["seed"]), _DATASET_CODE[dataset], *map(int, keys)])


def n_subjects(settings: dict, dataset: str) -> int:
    return max(1, int(round(settings["subjects"][dataset] * float(settings["scale"]))))


def realiser(settings: dict, dataset: str, subject_index: int) -> Realiser:
    """How this subject realises expressions; its own stream, so variation settings at 0 change
    no other draw."""
    return Realiser(settings["au_tables"], settings["variation"], rng_for(settings, dataset, subject_index, 0, 1))


def make_face(settings: dict, dataset: str, subject_index: int, four_d: bool):
    rng = rng_for(settings, dataset, subject_index, 0)
    resolution = settings["resolution_4d"] if four_d else settings["resolution"]
    if settings["face_source"] == "ict":
        from smile_vlm.synth.ict import IctFaceModel

        return IctFaceModel(settings["ict_dir"], rng), rng
    return FaceModel(sample_identity(rng), resolution), rng


def _pose_and_noise(settings: dict, rng: np.random.Generator) -> tuple[tuple, float]:
    return random_pose(rng, float(settings["pose_sigma_deg"])), float(settings["noise_mm"])


def _head_motion(settings: dict, rng: np.random.Generator, n_frames: int, drift: bool,
                 scale: float = 1.0) -> tuple[list, np.ndarray]:
    """Per-frame poses and shifts of a 4D sequence: a random start pose (times ``scale``) and, with
    ``drift``, a random end pose, moved as the ``head_motion`` setting says."""
    sigma = float(settings["pose_sigma_deg"])
    start = np.asarray(random_pose(rng, sigma)) * scale
    end = random_pose(rng, sigma) if drift else None
    return sequence_poses(n_frames, rng, settings["head_motion"], start, end)


def _posed_frame(model, style: Realiser, settings, rng, expression: str, scale: float):
    weights = style.weights(expression, scale, rng, jitter=float(settings["au_jitter"]))
    pose, noise = _pose_and_noise(settings, rng)
    return model.deform(weights, rng, pose, noise)


# --------------------------------------------------------------------------- BU-3DFE
def write_bu3dfe_subject(root: Path, settings: dict, s_index: int, sid: str) -> tuple[list, list]:
    samples = []
    model, rng = make_face(settings, "bu3dfe", s_index, four_d=False)
    style = realiser(settings, "bu3dfe", s_index)
    race = getattr(model, "identity", None).race if hasattr(model, "identity") else "WH"
    texture = model.texture(int(settings["texture_size"]))
    scans = [("neutral", 0)] + [(emotion, level) for emotion in EMOTIONS for level in (1, 2, 3, 4)]
    for k, (expression, level) in enumerate(scans):
        sample_rng = rng_for(settings, "bu3dfe", s_index, k + 1)
        frame = _posed_frame(model, style, settings, sample_rng, expression, INTENSITY_SCALE[level])
        base = f"{sid}_{BU3DFE_CODE_OF[expression]}{level:02d}{race}"
        folder = root / sid
        vertices = frame.vertices
        writers.write_vrml(folder / f"{base}_F3D.wrl", vertices, model.polygons, model.uv, model.polygon_uv, f"{base}_F3D.bmp")
        writers.write_image(folder / f"{base}_F3D.bmp", texture)
        writers.write_bnd(folder / f"{base}_F3D.bnd", model.bu83, vertices[model.bu83])
        samples.append({"sample_id": base, "subject": sid, "label": expression, "labels": expression,
                        "intensity": level, "n_frames": 1})
    return samples, []


# --------------------------------------------------------------------------- BU-4DFE
def write_bu4dfe_subject(root: Path, settings: dict, s_index: int, sid: str) -> tuple[list, list]:
    samples = []
    model, _ = make_face(settings, "bu4dfe", s_index, four_d=True)
    style = realiser(settings, "bu4dfe", s_index)
    texture = model.texture(int(settings["texture_size"]))
    coord_index, tex_index = writers.polygon_lines(model.polygons), writers.polygon_lines(model.polygon_uv)
    for e_index, emotion in enumerate(EMOTIONS):
        rng = rng_for(settings, "bu4dfe", s_index, e_index + 1)
        folder_name = BU4DFE_FOLDER_OF[emotion]
        n = int(settings["frames"]["bu4dfe"])
        strength = style.profile(n, rng, "posed") * rng.uniform(0.75, 1.0)
        weights = style.weights(emotion, 1.0, rng, jitter=float(settings["au_jitter"]))
        poses, shifts = _head_motion(settings, rng, n, drift=True)
        for frame_number in range(n):
            frame = model.deform({au: w * strength[frame_number] for au, w in weights.items()}, rng,
                                 poses[frame_number], float(settings["noise_mm"]), shifts[frame_number])
            stem = f"{frame_number:03d}"
            folder = root / sid / folder_name
            writers.write_vrml(folder / f"{stem}.wrl", frame.vertices, coord_index, model.uv, tex_index, f"{stem}.jpg")
            writers.write_image(folder / f"{stem}.jpg", texture)
            writers.write_bnd(root / "BU4DFE_BND_V1.1" / sid / folder_name / f"{stem}.bnd", model.bu83, frame.vertices[model.bu83])
        samples.append({"sample_id": f"{sid}_{folder_name}", "subject": sid, "label": emotion, "labels": emotion,
                        "intensity": -1, "n_frames": n})
    return samples, []


def finish_bu4dfe(root: Path, rows: list) -> None:
    # the distribution ships a viewer folder beside the subjects; readers must skip it
    atomic.write_text(root / "BU_WrlViewer_V2" / "readme.txt", "BU-4DFE VRML viewer (placeholder)\n")


# --------------------------------------------------------------------------- BP4D
def bp4d_frame_format(subject_index: int) -> tuple[int, bool]:
    """(zero-padding digits, frames start above 0) per subject: both vary in the real release."""
    return (3 if subject_index % 3 == 2 else 4), subject_index % 2 == 1


def occurring_units(au_weights: dict) -> set[int]:
    """AU numbers a coder marks as occurring: on either side at or above the FACS trace level (A),
    the level from which a caption names an AU."""
    return {parse_unit(key)[0] for key in active_units(au_weights)}


def write_bp4d_subject(root: Path, settings: dict, s_index: int, sid: str) -> tuple[list, list]:
    samples = []
    model, _ = make_face(settings, "bp4d", s_index, four_d=True)
    style = realiser(settings, "bp4d", s_index)
    texture, uv_top = model.frontal_texture(int(settings["texture_size"]))
    uv = _bottom_left(uv_top[model.valid])
    digits, offset_start = bp4d_frame_format(s_index)
    for t_index, (task, label) in enumerate(BP4D_TASKS.items()):
        rng = rng_for(settings, "bp4d", s_index, t_index + 1)
        n = int(settings["frames"]["bp4d"])
        first = int(rng.integers(1, 900)) if offset_start else 0
        strength = style.profile(n, rng, "spontaneous") * rng.uniform(0.5, 0.9)
        weights = style.weights(label, 1.0, rng, jitter=float(settings["au_jitter"]) * 1.5)
        poses, shifts = _head_motion(settings, rng, n, drift=False)
        folder = root / "Sequences_2D+3D" / sid / task
        occurring = []
        for k in range(n):
            applied = {au: w * strength[k] for au, w in weights.items()}
            frame = model.deform(applied, rng, poses[k], float(settings["noise_mm"]), shifts[k])
            stem = f"{first + k:0{digits}d}"
            writers.write_obj(folder / f"{stem}.obj", frame.vertices, model.triangles, uv, model.triangles)
            writers.write_image(folder / f"{stem}.jpg", texture)
            occurring.append(occurring_units(applied))
        writers.write_au_occ(root / "AUCoding" / "AU_OCC" / f"{sid}_{task}.csv", range(first, first + n),
                             occurring, ACTION_UNITS)
        samples.append({"sample_id": f"{sid}_{task}", "subject": sid, "label": label, "labels": label,
                        "intensity": -1, "n_frames": n, "first_frame": first, "task": task})
    return samples, []


# --------------------------------------------------------------------------- Bosphorus
def write_bosphorus_subject(root: Path, settings: dict, s_index: int, sid: str) -> tuple[list, list]:
    samples = []
    db = root / "BosphorusDB"
    model, subject_rng = make_face(settings, "bosphorus", s_index, four_d=False)
    style = realiser(settings, "bosphorus", s_index)
    if not isinstance(model, FaceModel):
        raise ValueError("bosphorus range grids need the procedural face source")
    texture, uv_top = model.frontal_texture(int(settings["texture_size"]))
    emotions = list(EMOTIONS)
    if s_index % 5 == 1:  # some subjects lack one emotion, so the "all six" filter matters
        emotions.remove(EMOTIONS[int(subject_rng.integers(len(EMOTIONS)))])
    lfau = int(subject_rng.choice(BOSPHORUS_LFAU))
    scans = [("N", "N", "neutral", {})] + [("E", BOSPHORUS_CODE_OF[e], e, None) for e in emotions]
    scans.append(("LFAU", str(lfau), "", {lfau: 1.0}))
    for k, (cls, code, label, fixed_weights) in enumerate(scans):
        rng = rng_for(settings, "bosphorus", s_index, k + 1)
        if fixed_weights is None:
            weights = style.weights(label, rng.uniform(0.7, 1.0), rng, jitter=float(settings["au_jitter"]))
        else:
            weights = style.individualise(fixed_weights)
        pose, noise = _pose_and_noise(settings, rng)
        frame = model.deform(weights, rng, pose, noise)
        stem = f"{sid}_{cls}_{code}_0"
        folder = db / sid
        writers.write_bnt(folder / f"{stem}.bnt", frame.grid, model.valid, uv_top, f"{stem}.png")
        writers.write_image(folder / f"{stem}.png", texture)
        lm3, lm2 = _bosphorus_landmarks(model, frame, uv_top, texture.shape, rng)
        writers.write_lm3(folder / f"{stem}.lm3", lm3)
        writers.write_lm2(folder / f"{stem}.lm2", lm2)
        samples.append({"sample_id": stem, "subject": sid, "label": label, "labels": label,
                        "intensity": -1, "n_frames": 1})
    return samples, []


def _bosphorus_landmarks(model, frame, uv_top, image_shape, rng):
    """3D points on grid vertices and their png pixels; now and then one point is left out."""
    grid_rows, grid_cols = np.nonzero(model.valid)  # row-major, same order as the vertices
    height, width = image_shape[:2]
    labels = list(model.bosphorus)
    if rng.random() < 0.25:
        labels.remove(labels[int(rng.integers(len(labels)))])
    lm3, lm2 = {}, {}
    for label in labels:
        v = model.bosphorus[label]
        r, c = grid_rows[v], grid_cols[v]
        lm3[label] = frame.grid[r, c]
        lm2[label] = np.array([uv_top[r, c, 0] * width, uv_top[r, c, 1] * height])
    return lm3, lm2


# --------------------------------------------------------------------------- 4DME
def write_4dme_subject(root: Path, settings: dict, s_index: int, sid: str) -> tuple[list, list]:
    samples, rows = [], []
    model, _ = make_face(settings, "4dme", s_index, four_d=True)
    style = realiser(settings, "4dme", s_index)
    texture, uv_top = model.frontal_texture(int(settings["texture_size"]))
    grey = np.repeat(texture.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    uv = _bottom_left(uv_top[model.valid])
    next_onset = 0
    for c_index in range(int(settings["micro_clips_per_subject"])):
        rng = rng_for(settings, "4dme", s_index, c_index + 1)
        aus = MICRO_TEMPLATES[int(rng.integers(len(MICRO_TEMPLATES)))]
        labels = micro_labels(aus)
        n = max(4, int(settings["micro_frames_per_clip"]) + int(rng.integers(-2, 3)))
        onset = next_onset + int(rng.integers(50, 400))
        next_onset = onset + n
        strength = style.profile(n, rng, "micro") * rng.uniform(0.15, 0.35)
        apex = onset + int(np.argmax(strength))
        weights = style.individualise({au: float(np.exp(rng.normal(0, 0.15))) for au in aus})
        # seated subjects in a chin rest barely turn away from their start pose
        poses, shifts = _head_motion(settings, rng, n, drift=False, scale=0.3)
        fold_name = f"ME{c_index + 1:02d}"
        folder = root / "mesh_micro" / sid / fold_name
        for k in range(n):
            frame = model.deform({au: w * strength[k] for au, w in weights.items()}, rng, poses[k],
                                 float(settings["noise_mm"]), shifts[k])
            writers.write_obj(folder / f"{onset + k}.obj", frame.vertices, model.triangles, uv, model.triangles)
            writers.write_image(folder / f"{onset + k}.jpg", grey)
        au_text = "+".join(f"AU{au}" + ("(k)" if rng.random() < 0.1 else "") for au in aus)
        rows.append({"sub_ID": sid, "fold_name": fold_name, "fold": c_index + 1, "Onset": onset, "Apex": apex,
                     "Offset": onset + n - 1, "AUs": au_text, "Emotion": "+".join(l.capitalize() for l in labels),
                     "eye blink": int(rng.random() < 0.15),
                     **{cls.capitalize(): int(cls in labels) for cls in MICRO_CLASSES}})
        samples.append({"sample_id": f"{sid}_{fold_name}", "subject": sid, "label": labels[0],
                        "labels": "|".join(labels), "intensity": -1, "n_frames": n, "onset": onset,
                        "apex": apex, "offset": onset + n - 1, "aus": list(aus)})
    return samples, rows


def finish_4dme(root: Path, rows: list) -> None:
    writers.write_4dme_xlsx(root / "4DME_Labelling_Micro_release v1.xlsx", rows)


def _bottom_left(uv_top_left: np.ndarray) -> np.ndarray:
    return np.column_stack([uv_top_left[:, 0], 1.0 - uv_top_left[:, 1]])


# One subject's scans (returns its samples and, for 4DME, its label-sheet rows), then what the
# dataset writes once after every subject.
SUBJECT_WRITERS = {"bu3dfe": write_bu3dfe_subject, "bu4dfe": write_bu4dfe_subject, "bp4d": write_bp4d_subject,
                   "bosphorus": write_bosphorus_subject, "4dme": write_4dme_subject}
FINISHERS = {"bu4dfe": finish_bu4dfe, "4dme": finish_4dme}


def write_dataset(dataset: str, root: Path, settings: dict, workers: int = 1) -> tuple[list, list]:
    """Every subject of ``dataset`` under ``root``: (subject ids, samples in subject order).

    Subjects draw from their own generators, so ``workers`` processes write the same bytes as one.
    """
    subjects = subject_ids(dataset, n_subjects(settings, dataset))
    write_subject = partial(SUBJECT_WRITERS[dataset], root, settings)
    if workers > 1 and len(subjects) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(subjects))) as pool:
            results = list(pool.map(write_subject, range(len(subjects)), subjects))
    else:
        results = [write_subject(s_index, sid) for s_index, sid in enumerate(subjects)]
    if dataset in FINISHERS:
        FINISHERS[dataset](root, [row for _, rows in results for row in rows])
    return subjects, [sample for samples, _ in results for sample in samples]

