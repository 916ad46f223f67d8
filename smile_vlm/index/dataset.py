"""Indexing one dataset: layout candidates, checked files, the manifest, rejects and skipped tables."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from smile_vlm import atomic
from smile_vlm.dynamic import sample_frames
from smile_vlm.errors import ScanError
from smile_vlm.index.accounting import log_summary, sweep
from smile_vlm.index.checks import run_checks
from smile_vlm.index.identities import check_identities
from smile_vlm.index.layouts import LAYOUTS, Candidate, Found
from smile_vlm.readers import max_bytes_of
from smile_vlm.settings import complete

MANIFEST_COLUMNS = [
    "dataset", "sample_id", "subject", "sequence", "frame", "label", "labels", "intensity",
    "mesh_path", "texture_path", "landmark_path", "task", "sex", "race", "onset", "apex",
    "offset", "aus",
]
REJECT_COLUMNS = ["path", "reason"]
INTEGER_COLUMNS = ["frame", "intensity", "onset", "apex", "offset"]

VALIDATE_MODES = ("sampled", "full", "header")

log = logging.getLogger(__name__)


def index_dataset(dataset: str, root: str | Path, settings: dict | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(manifest, rejects, skipped) of one dataset; manifest rows sorted by subject, sample_id, frame.

    Raises ScanError only when the dataset as a whole is unusable (missing root, top folder
    or 4DME spreadsheet, two spellings of one subject); anything wrong with one file becomes a
    rejects row, and every other file under the root a skipped row.
    """
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(LAYOUTS)}")
    settings = complete("index", settings)  # the index command's settings, resolved here once
    if settings["validate"] not in VALIDATE_MODES:
        raise ValueError(f"settings['validate'] must be one of {VALIDATE_MODES}, got {settings['validate']!r}")
    sample_frames(1, settings["frames"])  # a bad value fails here, before any file is read
    root = Path(root)
    if not root.is_dir():
        raise ScanError(root, "dataset root is not a folder")

    found = Found()
    candidates = LAYOUTS[dataset](root, settings, found)
    rejects = found.rejects
    same_person = {str(k): str(v) for k, v in (settings["same_person"] or {}).items()}
    for candidate in candidates:
        candidate.row["subject"] = same_person.get(candidate.row["subject"], candidate.row["subject"])
    candidates = _utf8_names(candidates, rejects)
    check_identities(dataset, [c.row["subject"] for c in candidates], root)
    candidates = _drop_duplicates(candidates, rejects)
    outcomes = check_candidates(candidates, settings, root)
    rows = []
    for candidate, (error, texture, landmark_error) in zip(candidates, outcomes):
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
    skipped = sweep(dataset, root, manifest, rejects_frame, found, settings)
    rejects_frame["path"] = rejects_frame["path"].map(shown_path)
    skipped["path"] = skipped["path"].map(shown_path)
    log_summary(dataset, manifest, rejects_frame, skipped, settings)
    return manifest, rejects_frame, skipped


def check_candidates(candidates: list[Candidate], settings: dict, root: Path) -> list[tuple]:
    """check_file's outcome for every candidate, in order.

    validate "full" and "header" check every file one way. "sampled" parses in full exactly
    the files rendering will read and checks the others' headers: per sample (one scan, or
    the frames of one sequence sorted by number), the frames that ``sample_frames`` picks
    among those that passed. A picked frame that fails its full check is rejected, which
    changes the pick, so picking repeats until every picked frame has passed a full check;
    render (smile_vlm.render.render_shard) then picks the same frames from the manifest.
    """
    mode, frames = settings["validate"], settings["frames"]
    max_bytes = max_bytes_of(settings["max_file_mb"])
    workers = int(settings["workers"] or len(os.sched_getaffinity(0)))  # null: every core this process may use

    def run(checks: list[tuple[int, str]]) -> list[tuple]:
        jobs = [(str(candidates[i].mesh), str(candidates[i].landmarks or ""), how, str(root), max_bytes)
                for i, how in checks]
        return run_checks(jobs, workers)

    if mode != "sampled":
        return run([(i, mode) for i in range(len(candidates))])
    sequences: dict[str, list[int]] = {}
    for position, candidate in enumerate(candidates):
        sequences.setdefault(candidate.row["sample_id"], []).append(position)
    for positions in sequences.values():
        positions.sort(key=lambda i: candidates[i].row["frame"])
    outcomes: list[tuple | None] = [None] * len(candidates)
    parsed = [False] * len(candidates)
    full = _picked(sequences, outcomes, parsed, frames)
    checks = [(i, "full") for i in full] + [(i, "header") for i in sorted(set(range(len(candidates))) - set(full))]
    while checks:  # later rounds parse the frames picked instead of rejected ones
        for (position, how), result in zip(checks, run(checks)):
            outcomes[position] = result
            parsed[position] = parsed[position] or how == "full"
        checks = [(i, "full") for i in _picked(sequences, outcomes, parsed, frames)]
    n_parsed = sum(parsed)
    log.info("validate: sampled: %d files parsed in full (static scans and the frames rendering reads with "
             "frames=%s), %d frames checked by header and end only (never read by rendering)",
             n_parsed, frames, len(candidates) - n_parsed)
    return outcomes


def _picked(sequences: dict[str, list[int]], outcomes: list, parsed: list[bool], frames) -> list[int]:
    """Positions that rendering would pick among the frames not rejected so far, and that have
    not been parsed in full yet."""
    picked = []
    for positions in sequences.values():
        alive = [i for i in positions if outcomes[i] is None or outcomes[i][0] is None]
        if alive:
            picked += [alive[k] for k in sample_frames(len(alive), frames) if not parsed[alive[k]]]
    return sorted(picked)


def shown_path(path: str) -> str:
    """A path as text: bytes of a name that is not UTF-8 (copied from an old Windows or DVD
    file system) become \\xNN escapes instead of making the CSV unwritable."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8_names(candidates: list[Candidate], rejects: list) -> list[Candidate]:
    """Candidates whose paths can be written to the manifest; a mesh with a non-UTF-8 name is a
    reject, a landmark or texture with one is left out (the sweep then lists it)."""
    kept = []
    for candidate in candidates:
        if shown_path(candidate.mesh) != str(candidate.mesh):
            rejects.append((str(candidate.mesh), "file name is not valid UTF-8; rename it"))
            continue
        for name in ("landmarks", "fallback_texture"):
            value = getattr(candidate, name)
            if value is not None and shown_path(value) != str(value):
                setattr(candidate, name, None)
        kept.append(candidate)
    return kept


def write_index(dataset: str, root: str | Path, settings: dict | None, manifest_csv: str | Path,
                rejects_csv: str | Path, skipped_csv: str | Path | None = None):
    """Index ``dataset`` and write the three tables atomically; returns (manifest, rejects, skipped).

    ``skipped_csv`` defaults to skipped.csv beside ``rejects_csv``; the manifest is written last.
    """
    manifest, rejects, skipped = index_dataset(dataset, root, settings)
    skipped_csv = Path(rejects_csv).with_name("skipped.csv") if skipped_csv is None else skipped_csv
    atomic.write_csv(skipped_csv, skipped)
    atomic.write_csv(rejects_csv, rejects)
    atomic.write_csv(manifest_csv, manifest)
    return manifest, rejects, skipped


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

