"""Dataset indexers: walk a raw dataset tree, check every mesh, list samples and rejects.

``index_dataset`` returns the manifest (one row per static scan or per 4D frame, columns
MANIFEST_COLUMNS of docs/design.md) and a rejects table (path, reason). A broken file costs
exactly its own row: layouts collect candidates without reading meshes, then every candidate
is checked on its own (in worker processes when settings["workers"] > 1).

settings: validate ("full" parses every mesh and landmark file, "header" only checks
existence, size and headers), workers (1), require_texture (False: a sample without a
texture keeps texture_path ''), task_classes (BP4D task -> class), annotations and mesh_dir
(4DME spreadsheet and mesh folder, relative to root).
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.readers import names, resolve_texture

MANIFEST_COLUMNS = [
    "dataset", "sample_id", "subject", "sequence", "frame", "label", "labels", "intensity",
    "mesh_path", "texture_path", "landmark_path", "task", "sex", "race", "onset", "apex",
    "offset", "aus",
]
REJECT_COLUMNS = ["path", "reason"]
INTEGER_COLUMNS = ["frame", "intensity", "onset", "apex", "offset"]

DEFAULT_SETTINGS = {
    "validate": "full",
    "workers": 1,
    "require_texture": False,
    "task_classes": dict(names.BP4D_TASK_CLASSES),
    "annotations": "4DME_Labelling_Micro_release v1.xlsx",
    "mesh_dir": "mesh_micro",
}
VALIDATE_MODES = ("full", "header")
_HEAD_BYTES = 65536  # the VRML url and the OBJ mtllib sit in the first lines of a file
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Candidate:
    """A sample found by a layout, not yet checked."""

    row: dict
    mesh: Path
    landmarks: Path | None = None
    fallback_texture: Path | None = None


def index_dataset(dataset: str, root: str | Path, settings: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, rejects) of one dataset; rows sorted by subject, sample_id, frame.

    Raises ScanError only when the dataset as a whole is unusable (missing root, top folder
    or 4DME spreadsheet); anything wrong with one file becomes a rejects row.
    """
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(LAYOUTS)}")
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    if settings["validate"] not in VALIDATE_MODES:
        raise ValueError(f"settings['validate'] must be one of {VALIDATE_MODES}, got {settings['validate']!r}")
    root = Path(root)
    if not root.is_dir():
        raise ScanError(root, "dataset root is not a folder")

    candidates, rejects = LAYOUTS[dataset](root, settings)
    candidates = _drop_duplicates(candidates, rejects)
    jobs = [(str(c.mesh), str(c.landmarks or ""), settings["validate"]) for c in candidates]
    rows = []
    for candidate, (error, texture, landmark_error) in zip(candidates, _run(jobs, int(settings["workers"]))):
        if error is not None:
            rejects.append((str(candidate.mesh), error))
            continue
        row = dict(candidate.row)
        if not texture and candidate.fallback_texture is not None and candidate.fallback_texture.is_file():
            texture = str(candidate.fallback_texture)
        if settings["require_texture"] and not texture:
            rejects.append((str(candidate.mesh), "texture missing"))
            continue
        row["texture_path"] = texture
        if candidate.landmarks is not None and landmark_error is None:
            row["landmark_path"] = str(candidate.landmarks)
        elif candidate.landmarks is not None:
            rejects.append((str(candidate.landmarks), landmark_error))
        rows.append(row)

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest[INTEGER_COLUMNS] = manifest[INTEGER_COLUMNS].astype("int64")
    manifest = manifest.sort_values(["subject", "sample_id", "frame"], kind="stable").reset_index(drop=True)
    rejects_frame = pd.DataFrame(rejects, columns=REJECT_COLUMNS).sort_values(REJECT_COLUMNS).reset_index(drop=True)
    return manifest, rejects_frame


def write_index(dataset: str, root: str | Path, settings: dict | None, manifest_csv: str | Path, rejects_csv: str | Path):
    """Index ``dataset`` and write both tables atomically; returns (manifest, rejects)."""
    manifest, rejects = index_dataset(dataset, root, settings)
    atomic.write_csv(rejects_csv, rejects)
    atomic.write_csv(manifest_csv, manifest)
    return manifest, rejects


# ----------------------------------------------------------------------------- checks


def check_file(job: tuple[str, str, str]) -> tuple[str | None, str, str | None]:
    """Check one mesh (and its landmark file): (mesh error or None, texture path or '', landmark error).

    Top level so that worker processes can pickle it. Any exception is turned into a reason:
    a reader bug on one odd file must not stop a 60 000-frame index.
    """
    mesh_path, landmark_path, mode = job
    try:
        texture = _check_mesh(Path(mesh_path), mode)
    except ScanError as err:
        return err.reason, "", None
    except Exception as err:  # noqa: BLE001 - see docstring
        return f"unexpected {type(err).__name__}: {err}", "", None
    landmark_error = None
    if landmark_path:
        try:
            _check_landmarks(Path(landmark_path), mode)
        except ScanError as err:
            landmark_error = err.reason
        except Exception as err:  # noqa: BLE001
            landmark_error = f"unexpected {type(err).__name__}: {err}"
    return None, texture, landmark_error


def _check_mesh(path: Path, mode: str) -> str:
    if mode == "full":
        from smile_vlm.readers import read_mesh

        texture = read_mesh(path).texture
        return str(texture) if texture is not None else ""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    if size == 0:
        raise ScanError(path, "empty file")
    suffix = path.suffix.lower()
    if suffix == ".bnt":
        from smile_vlm.readers.bosphorus import read_bnt_header

        name = read_bnt_header(path).texture_name
        texture = resolve_texture(path.parent, name, source=path, must_exist=False) if name else None
    else:
        with open(path, "rb") as stream:
            head = stream.read(_HEAD_BYTES)
        if suffix == ".wrl":
            from smile_vlm.readers.vrml import texture_url

            text = head.decode("utf-8", errors="replace")
            if not text.lstrip("\ufeff \t\r\n").startswith("#VRML V2.0"):
                raise ScanError(path, "not a VRML 2.0 file (no '#VRML V2.0' header)")
            name = texture_url(text)
            texture = resolve_texture(path.parent, name, source=path, must_exist=False) if name else None
        elif suffix == ".obj":
            from smile_vlm.readers.obj import material_texture

            texture = material_texture(head, path)
        else:
            raise ScanError(path, f"unsupported mesh extension {path.suffix!r}")
    return str(texture) if texture is not None and texture.is_file() else ""


def _check_landmarks(path: Path, mode: str) -> None:
    if mode != "full":
        if not path.is_file() or path.stat().st_size == 0:
            raise ScanError(path, "missing or empty landmark file")
        return
    if path.suffix == ".bnd":
        from smile_vlm.readers.bnd import read_bnd

        read_bnd(path)
    elif path.suffix == ".lm3":
        from smile_vlm.readers.bosphorus import read_lm3

        read_lm3(path)


def _run(jobs: list, workers: int) -> list:
    if workers <= 1 or len(jobs) < 2:
        return [check_file(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_file, jobs, chunksize=max(1, len(jobs) // (workers * 8))))


def _drop_duplicates(candidates: list[Candidate], rejects: list) -> list[Candidate]:
    """Keep the first file of each (sample_id, frame); e.g. '7.wrl' beside '007.wrl'."""
    seen: dict[tuple[str, int], Path] = {}
    kept = []
    for candidate in candidates:
        key = (candidate.row["sample_id"], candidate.row["frame"])
        if key in seen:
            rejects.append((str(candidate.mesh), f"duplicate of {seen[key]} (same sample and frame)"))
            continue
        seen[key] = candidate.mesh
        kept.append(candidate)
    return kept


# ----------------------------------------------------------------------------- layouts


def _row(dataset: str, sample_id: str, subject: str, mesh: Path, **fields) -> dict:
    row = {
        "dataset": dataset, "sample_id": sample_id, "subject": subject, "sequence": "", "frame": 0,
        "label": "", "labels": "", "intensity": -1, "mesh_path": str(mesh), "texture_path": "",
        "landmark_path": "", "task": "", "sex": "", "race": "", "onset": -1, "apex": -1,
        "offset": -1, "aus": "",
    }
    row.update(fields)
    if "labels" not in fields:
        row["labels"] = row["label"]
    return row


def _subfolders(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and re.fullmatch(pattern, p.name))


def _named_scans(subject_dir: Path, pattern: str, parse, rejects: list):
    """(path, parsed name) of the static scans of one subject folder whose names parse and name
    that subject; the others become rejects."""
    for path in sorted(subject_dir.glob(pattern)):
        try:
            parsed = parse(path.name)
        except ScanError as err:
            rejects.append((str(path), err.reason))
            continue
        if parsed.subject != subject_dir.name:
            rejects.append((str(path), f"belongs to {parsed.subject}, found in {subject_dir.name}"))
            continue
        yield path, parsed


def _numbered(folder: Path, suffixes: tuple[str, ...], rejects: list | None) -> dict[int, Path]:
    """Files of ``folder`` with these suffixes keyed by their frame number (sorted numerically).

    With ``rejects`` given, an unnumbered file or a second file for one number is a reject.
    """
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        try:
            number = names.frame_number(path.name)
        except ScanError as err:
            if rejects is not None:
                rejects.append((str(path), err.reason))
            continue
        if number in found:
            if rejects is not None:
                rejects.append((str(path), f"duplicate frame {number} (also {found[number].name})"))
            continue
        found[number] = path
    return dict(sorted(found.items()))


def _layout_bu3dfe(root: Path, settings: dict) -> tuple[list[Candidate], list]:
    candidates, rejects = [], []
    for subject_dir in _subfolders(root, r"[FM]\d{4}"):
        # Only the cropped F3D meshes are samples; RAW meshes live in another frame (§1.2).
        for path, parsed in _named_scans(subject_dir, "*_F3D.wrl", names.parse_bu3dfe_name, rejects):
            landmarks = path.with_name(f"{parsed.base}_F3D.bnd")
            row = _row(
                "bu3dfe", parsed.base, parsed.subject, path, label=parsed.label,
                intensity=parsed.intensity, sex=parsed.sex, race=parsed.race,
            )
            candidates.append(Candidate(row, path, landmarks if landmarks.is_file() else None))
    return candidates, rejects


def _layout_bu4dfe(root: Path, settings: dict) -> tuple[list[Candidate], list]:
    candidates, rejects = [], []
    landmark_root = root / "BU4DFE_BND_V1.1"
    # The subject pattern also skips BU_WrlViewer_V2/ and BU4DFE_BND_V1.1/ (§2.2).
    for subject_dir in _subfolders(root, r"[FM]\d{3}"):
        subject = subject_dir.name
        for expression_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            label = names.BU4DFE_FOLDERS.get(expression_dir.name)
            if label is None:
                rejects.append((str(expression_dir), "unknown expression folder"))
                continue
            landmark_dir = landmark_root / subject / expression_dir.name
            landmarks = _numbered(landmark_dir, (".bnd",), None) if landmark_dir.is_dir() else {}
            images = _numbered(expression_dir, (".jpg",), None)
            for frame, path in _numbered(expression_dir, (".wrl",), rejects).items():
                row = _row(
                    "bu4dfe", f"{subject}_{expression_dir.name}", subject, path,
                    sequence=expression_dir.name, frame=frame, label=label, sex=subject[0],
                )
                candidates.append(Candidate(row, path, landmarks.get(frame), images.get(frame)))
    return candidates, rejects


def _layout_bp4d(root: Path, settings: dict) -> tuple[list[Candidate], list]:
    sequences = root / "Sequences_2D+3D"
    if not sequences.is_dir():
        raise ScanError(sequences, "BP4D folder Sequences_2D+3D not found")
    task_classes = settings["task_classes"]
    candidates, rejects = [], []
    for subject_dir in _subfolders(sequences, r"[FM]\d{3}"):
        subject = subject_dir.name
        for task_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            if task_dir.name not in task_classes:
                continue  # tasks outside the map are not part of the protocol
            images = _numbered(task_dir, (".jpg",), None)
            for frame, path in _numbered(task_dir, (".wrl", ".obj"), rejects).items():
                row = _row(
                    "bp4d", f"{subject}_{task_dir.name}", subject, path, sequence=task_dir.name,
                    frame=frame, label=task_classes[task_dir.name], task=task_dir.name, sex=subject[0],
                )
                candidates.append(Candidate(row, path, None, images.get(frame)))
    return candidates, rejects


def _layout_bosphorus(root: Path, settings: dict) -> tuple[list[Candidate], list]:
    parts = _subfolders(root, r"BosphorusDB(_p\d+)?")
    if not parts:
        raise ScanError(root, "no BosphorusDB or BosphorusDB_p<k> folder")
    candidates, rejects = [], []
    for part in parts:
        for subject_dir in _subfolders(part, r"bs\d{3}"):
            for path, parsed in _named_scans(subject_dir, "*.bnt", names.parse_bosphorus_name, rejects):
                landmarks = path.with_suffix(".lm3")
                row = _row("bosphorus", path.stem, parsed.subject, path, label=parsed.label)
                candidates.append(
                    Candidate(row, path, landmarks if landmarks.is_file() else None, path.with_suffix(".png"))
                )
    return candidates, rejects


def _layout_4dme(root: Path, settings: dict) -> tuple[list[Candidate], list]:
    from smile_vlm.readers.fourdme import read_annotations

    annotations = read_annotations(root / settings["annotations"])
    mesh_root = root / settings["mesh_dir"]
    candidates, rejects = [], []
    for clip in annotations.itertuples(index=False):
        clip_dir = mesh_root / clip.subject / clip.clip
        if pd.isna(clip.onset) or pd.isna(clip.offset):
            rejects.append((str(clip_dir), "onset or offset is not an integer in the annotations"))
            continue
        if not clip_dir.is_dir():
            rejects.append((str(clip_dir), "clip folder not found"))
            continue
        onset, offset = int(clip.onset), int(clip.offset)
        frames = _numbered(clip_dir, (".obj", ".wrl"), rejects)
        expected = offset - onset + 1
        numbers = list(frames)
        # Unique numbers, the right count and the right ends mean exactly onset..offset.
        if len(numbers) != expected or numbers[0] != onset or numbers[-1] != offset:
            found = f"{numbers[0]}..{numbers[-1]}" if numbers else "none"
            rejects.append(
                (str(clip_dir), f"{len(numbers)} frames ({found}); annotation onset {onset}, offset {offset} needs {expected}")
            )
            continue
        images = _numbered(clip_dir, _IMAGE_SUFFIXES, None)
        for frame, path in frames.items():
            row = _row(
                "4dme", f"{clip.subject}_{clip.clip}", clip.subject, path, sequence=clip.clip, frame=frame,
                label=clip.label, labels=clip.labels, onset=onset,
                apex=-1 if pd.isna(clip.apex) else int(clip.apex), offset=offset, aus=clip.aus,
            )
            candidates.append(Candidate(row, path, None, images.get(frame)))
    return candidates, rejects


LAYOUTS = {
    "bu3dfe": _layout_bu3dfe,
    "bu4dfe": _layout_bu4dfe,
    "bp4d": _layout_bp4d,
    "bosphorus": _layout_bosphorus,
    "4dme": _layout_4dme,
}
