"""Dataset layouts: where each dataset keeps its scans, frames and landmarks, read without opening
a mesh. Each layout returns its candidates (samples not yet checked) and records in ``Found``
what it rejected or saw and did not use.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from smile_vlm.errors import ScanError
from smile_vlm.index.checks import check_inside
from smile_vlm.readers import max_bytes_of, names
from smile_vlm.readers.aucoding import sequence_occurrences

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Candidate:
    """A sample found by a layout, not yet checked."""

    row: dict
    mesh: Path
    landmarks: Path | None = None
    fallback_texture: Path | None = None


@dataclass
class Found:
    """What a layout learnt besides its candidates: rejects, reasons for not using files or
    whole folders (``skips``; the sweep applies a folder's reason to every file inside) and
    files used outside the manifest (the 4DME sheet)."""

    rejects: list = field(default_factory=list)
    skips: dict = field(default_factory=dict)
    used: set = field(default_factory=set)

    def reject(self, path, reason: str) -> None:
        self.rejects.append((str(path), reason))

    def skip(self, path, reason: str) -> None:
        self.skips.setdefault(os.path.normpath(str(path)), reason)

    def use(self, path) -> None:
        self.used.add(os.path.normpath(str(path)))



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


def _subfolders(folder: Path, pattern: str, found: Found, what: str, fix=str) -> list[Path]:
    """Real (not linked) subfolders whose names match ``pattern``, sorted.

    A folder that matches only after Unicode NFKC, stripping and ignoring case ('f0001',
    'F0001 ') is not used: it is skipped with a reason naming the spelling to rename it to,
    since accepting it could file one person under two names. Other folders are left to the
    sweep, which lists their files with the dataset's reasons.
    """
    kept = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        if re.fullmatch(pattern, path.name):
            kept.append(path)
            continue
        folded = unicodedata.normalize("NFKC", path.name).strip()
        if re.fullmatch(pattern, folded, re.IGNORECASE):
            found.skip(path, f"{what} folder {path.name!r} differs from the expected spelling "
                             f"{fix(folded)!r} only in case, spacing or Unicode form; rename it to use it")
    return kept


def _files(folder: Path) -> list[Path]:
    """Entries of a folder that are not real folders (regular files, links, FIFOs, devices),
    so that a FIFO or a device named like a scan becomes a reject instead of vanishing."""
    return sorted(p for p in folder.iterdir() if p.is_symlink() or not p.is_dir())


def _by_lower_name(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in _files(folder)}


def _named_scans(subject_dir: Path, suffix: str, parse, found: Found):
    """(path, parsed name) of the static scans (extension ``suffix`` in any case) of one subject
    folder whose names parse and name that subject; the others become rejects."""
    for path in _files(subject_dir):
        if path.suffix.lower() != suffix:
            continue
        try:
            parsed = parse(path.name)
        except ScanError as err:
            found.reject(path, err.reason)
            continue
        if parsed.subject != subject_dir.name:
            found.reject(path, f"belongs to {parsed.subject}, found in {subject_dir.name}")
            continue
        yield path, parsed


def _numbered(folder: Path, suffixes: tuple[str, ...], found: Found | None) -> dict[int, Path]:
    """Files of ``folder`` with these suffixes (any case) keyed by frame number, sorted numerically.

    With ``found`` given, an unnumbered file or a second file for one number is a reject.
    """
    numbered: dict[int, Path] = {}
    for path in _files(folder):
        if path.suffix.lower() not in suffixes:
            continue
        try:
            number = names.frame_number(path.name)
        except ScanError as err:
            if found is not None:
                found.reject(path, err.reason)
            continue
        if number in numbered:
            if found is not None:
                found.reject(path, f"duplicate frame {number} (also {numbered[number].name})")
            continue
        numbered[number] = path
    return dict(sorted(numbered.items()))


def _layout_bu3dfe(root: Path, settings: dict, found: Found) -> list[Candidate]:
    candidates = []
    for subject_dir in _subfolders(root, r"[FM]\d{4}", found, "BU-3DFE subject", str.upper):
        siblings = _by_lower_name(subject_dir)
        # Only the cropped F3D meshes are samples; RAW meshes live in another frame (§1.2).
        scans = ((p, parsed) for p, parsed in _named_scans(subject_dir, ".wrl", names.parse_bu3dfe_name, found)
                 if parsed.kind == "F3D")
        for path, parsed in scans:
            landmarks = siblings.get(f"{parsed.base}_F3D.bnd".lower())
            row = _row(
                "bu3dfe", parsed.base, parsed.subject, path, label=parsed.label,
                intensity=parsed.intensity, sex=parsed.sex, race=parsed.race,
            )
            candidates.append(Candidate(row, path, landmarks))
    return candidates


def _layout_bu4dfe(root: Path, settings: dict, found: Found) -> list[Candidate]:
    candidates = []
    landmark_root = root / "BU4DFE_BND_V1.1"
    folders = {name.lower(): name for name in names.BU4DFE_FOLDERS}
    # The subject pattern also skips BU_WrlViewer_V2/ and BU4DFE_BND_V1.1/ (§2.2).
    for subject_dir in _subfolders(root, r"[FM]\d{3}", found, "BU-4DFE subject", str.upper):
        subject = subject_dir.name
        for expression_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            label = names.BU4DFE_FOLDERS.get(expression_dir.name)
            if label is None:
                spelled = folders.get(expression_dir.name.strip().lower())
                found.skip(expression_dir, f"expression folder {expression_dir.name!r} differs from {spelled!r} "
                                           "only in case or spacing; rename it to use it" if spelled else
                                           f"{expression_dir.name!r} is not one of the six expression folders "
                                           f"({', '.join(names.BU4DFE_FOLDERS)})")
                continue
            landmark_dir = landmark_root / subject / expression_dir.name
            landmarks = _numbered(landmark_dir, (".bnd",), None) if landmark_dir.is_dir() else {}
            images = _numbered(expression_dir, (".jpg",), None)
            for frame, path in _numbered(expression_dir, (".wrl",), found).items():
                row = _row(
                    "bu4dfe", f"{subject}_{expression_dir.name}", subject, path,
                    sequence=expression_dir.name, frame=frame, label=label, sex=subject[0],
                )
                candidates.append(Candidate(row, path, landmarks.get(frame), images.get(frame)))
    return candidates


def _layout_bp4d(root: Path, settings: dict, found: Found) -> list[Candidate]:
    sequences = root / "Sequences_2D+3D"
    if not sequences.is_dir():
        raise ScanError(sequences, "BP4D folder Sequences_2D+3D not found")
    task_classes = settings["task_classes"]
    candidates = []
    for subject_dir in _subfolders(sequences, r"[FM]\d{3}", found, "BP4D subject", str.upper):
        subject = subject_dir.name
        for task_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir() and not p.is_symlink()):
            if task_dir.name not in task_classes:
                # tasks outside the map are not part of the protocol
                found.skip(task_dir, f"task {task_dir.name!r} is not in datasets.bp4d.task_classes")
                continue
            images = _numbered(task_dir, (".jpg",), None)
            aus = sequence_occurrences(root, subject, task_dir.name, found)  # AUCoding/AU_OCC, if released
            for frame, path in _numbered(task_dir, (".wrl", ".obj"), found).items():
                row = _row(
                    "bp4d", f"{subject}_{task_dir.name}", subject, path, sequence=task_dir.name,
                    frame=frame, label=task_classes[task_dir.name], task=task_dir.name, sex=subject[0],
                    aus=aus.get(frame, ""),
                )
                candidates.append(Candidate(row, path, None, images.get(frame)))
    return candidates


def _layout_bosphorus(root: Path, settings: dict, found: Found) -> list[Candidate]:
    parts = _subfolders(root, r"BosphorusDB(_p\d+)?", found, "Bosphorus part",
                        lambda name: "BosphorusDB" + name[len("BosphorusDB"):].lower())
    if not parts:
        raise ScanError(root, "no BosphorusDB or BosphorusDB_p<k> folder")
    candidates = []
    for part in parts:
        for subject_dir in _subfolders(part, r"bs\d{3}", found, "Bosphorus subject", str.lower):
            siblings = _by_lower_name(subject_dir)
            for path, parsed in _named_scans(subject_dir, ".bnt", names.parse_bosphorus_name, found):
                stem = path.name.rsplit(".", 1)[0]
                row = _row("bosphorus", stem, parsed.subject, path, label=parsed.label)
                candidates.append(Candidate(row, path, siblings.get(f"{stem}.lm3".lower()),
                                            siblings.get(f"{stem}.png".lower())))
    return candidates


def _layout_4dme(root: Path, settings: dict, found: Found) -> list[Candidate]:
    from smile_vlm.readers.fourdme import plain_name_problem, read_annotations

    sheet = root / settings["annotations"]
    check_inside(sheet, root)  # the sheet is read like a scan: inside the root, regular, bounded
    annotations = read_annotations(sheet, max_bytes=max_bytes_of(settings["max_file_mb"]))
    found.use(sheet)
    mesh_root = root / settings["mesh_dir"]
    candidates, listed, rejected_clips = [], set(), {}
    for clip in annotations.itertuples(index=False):
        # Only plain names become a path: sub_ID '../../elsewhere' must never be read.
        plain = not plain_name_problem(clip.subject) and not plain_name_problem(clip.clip)
        clip_dir = mesh_root / clip.subject / clip.clip if plain else None
        if clip_dir is not None:
            listed.add(os.path.normpath(str(clip_dir)))
        if clip.problem:
            found.reject(sheet, f"row {clip.row} ({clip.subject}/{clip.clip}): {clip.problem}")
            if clip_dir is not None:
                rejected_clips.setdefault(clip_dir, f"clip of sheet row {clip.row}, which was rejected: {clip.problem}")
            continue
        if not clip_dir.is_dir() or clip_dir.is_symlink():
            found.reject(clip_dir, "clip folder not found" if not clip_dir.is_symlink() else
                         "clip folder is a link; links to folders are not followed")
            continue
        onset, offset = int(clip.onset), int(clip.offset)
        frames = _numbered(clip_dir, (".obj", ".wrl"), found)
        expected = offset - onset + 1
        numbers = list(frames)
        # Unique numbers, the right count and the right ends mean exactly onset..offset.
        if len(numbers) != expected or numbers[0] != onset or numbers[-1] != offset:
            shown = f"{numbers[0]}..{numbers[-1]}" if numbers else "none"
            found.reject(clip_dir, f"{len(numbers)} frames ({shown}); annotation onset {onset}, "
                                   f"offset {offset} needs {expected}")
            continue
        images = _numbered(clip_dir, _IMAGE_SUFFIXES, None)
        for frame, path in frames.items():
            row = _row(
                "4dme", f"{clip.subject}_{clip.clip}", clip.subject, path, sequence=clip.clip, frame=frame,
                label=clip.label, labels=clip.labels, onset=onset,
                apex=-1 if pd.isna(clip.apex) else int(clip.apex), offset=offset, aus=clip.aus,
            )
            candidates.append(Candidate(row, path, None, images.get(frame)))
    used_dirs = {c.mesh.parent for c in candidates}
    for clip_dir, reason in rejected_clips.items():
        if clip_dir not in used_dirs:  # a repeated row must not shadow the row that uses the folder
            found.skip(clip_dir, reason)
    if mesh_root.is_dir():
        for subject_dir in sorted(p for p in mesh_root.iterdir() if p.is_dir() and not p.is_symlink()):
            for clip_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir() and not p.is_symlink()):
                if os.path.normpath(str(clip_dir)) not in listed:
                    found.skip(clip_dir, "clip folder not listed in the annotation sheet")
    return candidates


LAYOUTS = {
    "bu3dfe": _layout_bu3dfe,
    "bu4dfe": _layout_bu4dfe,
    "bp4d": _layout_bp4d,
    "bosphorus": _layout_bosphorus,
    "4dme": _layout_4dme,
}
