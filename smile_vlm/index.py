"""Dataset indexers: walk a raw dataset tree, check every mesh, list samples, rejects and skips.

``index_dataset`` returns three tables: the manifest (one row per static scan or per 4D frame,
columns MANIFEST_COLUMNS of docs/design.md), the rejects (path, reason: a sample's file that
failed its checks) and the skipped files (path, reason: everything else under the root that
the index saw and did not use). Together they account for every file under the root, so a
scan can be lost only with a row saying why. A broken file costs exactly its own row: layouts
collect candidates without reading meshes, then every candidate is checked on its own (in
worker processes when settings["workers"] > 1).

settings: validate ("sampled", the default, parses in full what rendering reads — every
static scan and the frames of each 4D sequence that ``dynamic.sample_frames`` picks with
``frames`` — and checks only the header and end of the other frames, which nothing reads;
"full" parses every mesh and landmark file; "header" only checks existence, size, headers and
file ends, and parses a file only when these fail, so that it never rejects a file that
parses), frames (render.frames: 16 or "all"), workers (1), require_texture (False: a sample without a
texture keeps texture_path ''), max_file_mb (per-file size limit, checked before reading),
same_person ({raw subject spelling: spelling to use}, for two spellings of one person),
task_classes (BP4D task -> class), annotations and mesh_dir (4DME spreadsheet and mesh
folder, relative to root).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from smile_vlm import atomic
from smile_vlm.dynamic import sample_frames
from smile_vlm.errors import ScanError
from smile_vlm.readers import DEFAULT_MAX_FILE_MB, check_regular, max_bytes_of, read_ends, resolve_texture
from smile_vlm.readers import names

MANIFEST_COLUMNS = [
    "dataset", "sample_id", "subject", "sequence", "frame", "label", "labels", "intensity",
    "mesh_path", "texture_path", "landmark_path", "task", "sex", "race", "onset", "apex",
    "offset", "aus",
]
REJECT_COLUMNS = ["path", "reason"]
SKIP_COLUMNS = ["path", "reason"]
INTEGER_COLUMNS = ["frame", "intensity", "onset", "apex", "offset"]

DEFAULT_SETTINGS = {
    "validate": "sampled",
    "frames": 16,  # render.frames: which frames of a sequence rendering reads
    "workers": 1,
    "require_texture": False,
    "max_file_mb": DEFAULT_MAX_FILE_MB,
    "same_person": {},
    "task_classes": dict(names.BP4D_TASK_CLASSES),
    "annotations": "4DME_Labelling_Micro_release v1.xlsx",
    "mesh_dir": "mesh_micro",
}
VALIDATE_MODES = ("sampled", "full", "header")
_HEAD_BYTES = 65536  # the VRML url and the OBJ mtllib sit in the first lines of a file; also the tail read
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_LOGGED_ROWS = 20  # rejects/skips shown one by one in the log; the CSVs have all of them

log = logging.getLogger(__name__)


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


def index_dataset(dataset: str, root: str | Path, settings: dict | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(manifest, rejects, skipped) of one dataset; manifest rows sorted by subject, sample_id, frame.

    Raises ScanError only when the dataset as a whole is unusable (missing root, top folder
    or 4DME spreadsheet, two spellings of one subject); anything wrong with one file becomes a
    rejects row, and every other file under the root a skipped row.
    """
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(LAYOUTS)}")
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
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
    workers = int(settings["workers"])

    def run(checks: list[tuple[int, str]]) -> list[tuple]:
        jobs = [(str(candidates[i].mesh), str(candidates[i].landmarks or ""), how, str(root), max_bytes)
                for i, how in checks]
        return _run(jobs, workers)

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


# ----------------------------------------------------------------------------- identities


def check_identities(dataset: str, subjects, source) -> None:
    """Raise ScanError when two raw spellings fold to one identity (names.subject_key).

    'S01' and 's01' in one dataset are either one person filed twice or two people whose
    names differ only in case; either way grouping and leakage checks would be wrong.
    """
    spellings: dict[str, set[str]] = {}
    for subject in subjects:
        spellings.setdefault(names.subject_key(subject), set()).add(str(subject))
    clashes = [sorted(group) for group in spellings.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(" and ".join(repr(s) for s in group) for group in sorted(clashes))
        first = clashes[0]
        raise ScanError(source, f"subjects {shown} are one identity after Unicode NFKC, strip and casefold; "
                                f"rename one, or if they are the same person set datasets.{dataset}.same_person: "
                                f"{{{first[1]!r}: {first[0]!r}}}")


# ----------------------------------------------------------------------------- checks


def check_file(job: tuple) -> tuple[str | None, str, str | None]:
    """Check one mesh (and its landmark file): (mesh error or None, texture path or '', landmark error).

    job = (mesh path, landmark path or '', validate mode, dataset root, per-file byte limit).
    Top level so that worker processes can pickle it. Any exception is turned into a reason:
    a reader bug on one odd file must not stop a 60 000-frame index.
    """
    mesh_path, landmark_path, mode, root, max_bytes = job
    try:
        check_inside(Path(mesh_path), root)
        texture = _check_mesh(Path(mesh_path), mode, max_bytes)
    except ScanError as err:
        return err.reason, "", None
    except MemoryError:
        return "out of memory while reading (file too large for this machine)", "", None
    except Exception as err:  # noqa: BLE001 - see docstring
        return f"unexpected {type(err).__name__}: {err}", "", None
    landmark_error = None
    if landmark_path:
        try:
            check_inside(Path(landmark_path), root)
            _check_landmarks(Path(landmark_path), mode, max_bytes)
        except ScanError as err:
            landmark_error = err.reason
        except Exception as err:  # noqa: BLE001
            landmark_error = f"unexpected {type(err).__name__}: {err}"
    return None, texture, landmark_error


def check_inside(path: Path, root: str | Path) -> None:
    """A link is read only when it resolves inside the dataset root (never /dev/zero or ~/.ssh)."""
    if not os.path.islink(path):
        return
    target = os.path.realpath(path)
    top = os.path.realpath(root)
    if os.path.commonpath([top, target]) != top:
        raise ScanError(path, f"link to {target}, outside the dataset root; links are read only inside it")


def _check_mesh(path: Path, mode: str, max_bytes: int) -> str:
    """The texture of a mesh that passes its checks ('' for none); a ScanError otherwise.

    A header check that doubts a file (no header, no coordinate block where expected, a cut
    end) hands it to a full parse, which decides and names the problem: the cheap checks never
    reject a file that parses.
    """
    if mode == "header":
        if check_regular(path, max_bytes) == 0:
            raise ScanError(path, "empty file")
        try:
            return _header_texture(path, max_bytes)
        except ScanError:
            pass
    from smile_vlm.readers import read_mesh

    texture = read_mesh(path, max_bytes=max_bytes).texture
    return str(texture) if texture is not None else ""


def _header_texture(path: Path, max_bytes: int) -> str:
    """The cheap checks of a mesh: header, texture reference and, for text formats, its end."""
    suffix = path.suffix.lower()
    if suffix == ".bnt":
        from smile_vlm.readers.bosphorus import read_bnt_header

        name = read_bnt_header(path, max_bytes=max_bytes).texture_name
        texture = resolve_texture(path.parent, name, source=path, must_exist=False) if name else None
    elif suffix in (".wrl", ".obj"):
        head, tail, whole = read_ends(path, max_bytes, _HEAD_BYTES)
        if suffix == ".wrl":
            from smile_vlm.readers.vrml import check_ends

            name = check_ends(head, tail, whole, path)
            texture = resolve_texture(path.parent, name, source=path, must_exist=False) if name else None
        else:
            from smile_vlm.readers.obj import check_ends

            texture = check_ends(head, tail, whole, path)
    else:
        raise ScanError(path, f"unsupported mesh extension {path.suffix!r}")
    return str(texture) if texture is not None and texture.is_file() else ""


def _check_landmarks(path: Path, mode: str, max_bytes: int) -> None:
    if mode != "full":
        if check_regular(path, max_bytes) == 0:
            raise ScanError(path, "empty landmark file")
        return
    if path.suffix.lower() == ".bnd":
        from smile_vlm.readers.bnd import read_bnd

        read_bnd(path, max_bytes=max_bytes)
    elif path.suffix.lower() == ".lm3":
        from smile_vlm.readers.bosphorus import read_lm3

        read_lm3(path, max_bytes=max_bytes)


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


# ----------------------------------------------------------------------------- accounting


def sweep(dataset: str, root: Path, manifest: pd.DataFrame, rejects: pd.DataFrame, found: Found,
          settings: dict) -> pd.DataFrame:
    """Every entry under ``root`` that is in neither the manifest nor the rejects, with why.

    Walks without following folder links (a link is listed, not entered). A file's reason is
    the layout's reason for it or its nearest folder, else a link or non-regular-file
    reason, else the dataset's rules for files it knows and does not use (RAW meshes, .lm2, ...).
    """
    accounted = set(found.used)
    for column in ("mesh_path", "texture_path", "landmark_path"):
        accounted.update(os.path.normpath(p) for p in manifest[column] if p)
    rejected = {os.path.normpath(p): reason for p, reason in zip(rejects["path"], rejects["reason"])}
    accounted.update(rejected)
    folder_reasons = dict(found.skips)
    for path, reason in rejected.items():
        if os.path.isdir(path) and not os.path.islink(path):
            folder_reasons.setdefault(path, f"in a rejected folder ({reason})")
    rejected_stems = {}
    for path in rejected:
        folder, name = os.path.split(path)
        rejected_stems.setdefault(folder, []).append(name.rsplit(".", 1)[0])
    top = os.path.normpath(str(root))
    rows = []

    def unreadable(err: OSError) -> None:
        rows.append((err.filename, f"cannot list this folder: {err.strerror}"))

    for folder, subfolders, files in os.walk(top, onerror=unreadable):
        subfolders.sort()
        entries = [name for name in subfolders if os.path.islink(os.path.join(folder, name))] + files
        for name in sorted(entries):
            path = os.path.join(folder, name)
            if path in accounted:
                continue
            rows.append((path, _skip_reason(dataset, top, path, folder_reasons, rejected_stems, settings)))
    return pd.DataFrame(rows, columns=SKIP_COLUMNS).sort_values(SKIP_COLUMNS).reset_index(drop=True)


def _skip_reason(dataset: str, top: str, path: str, folder_reasons: dict, rejected_stems: dict,
                 settings: dict) -> str:
    if path in folder_reasons:
        return folder_reasons[path]
    parent = os.path.dirname(path)
    while len(parent) > len(top):
        if parent in folder_reasons:
            return folder_reasons[parent]
        parent = os.path.dirname(parent)
    if os.path.islink(path):
        target, real_top = os.path.realpath(path), os.path.realpath(top)
        if os.path.commonpath([real_top, target]) != real_top:
            return f"link to {target}, outside the dataset root (not read)"
        if os.path.isdir(path):
            return "link to a folder: links to folders are not followed"
    if not os.path.islink(path) and not os.path.isfile(path):
        from smile_vlm.readers import _kind

        try:
            return f"not a regular file ({_kind(os.lstat(path).st_mode)}); only regular files are read"
        except OSError as err:
            return f"cannot read: {err.strerror}"
    name = os.path.basename(path)
    stem = name.rsplit(".", 1)[0]
    if stem in rejected_stems.get(os.path.dirname(path), []):
        return f"belongs to {stem}, which was rejected (see rejects.csv)"
    relative = os.path.relpath(path, top)
    for pattern, reason in SKIP_RULES.get(dataset, []):
        if re.search(pattern, relative.replace(os.sep, "/"), re.IGNORECASE):
            return reason.format(**settings)
    if name == "SYNTHETIC.json":
        return "record of the synthetic generator, not a scan"
    return f"not part of the {DISPLAY_NAMES[dataset]} layout ({LAYOUT_TEXT[dataset]})"


DISPLAY_NAMES = {"bu3dfe": "BU-3DFE", "bu4dfe": "BU-4DFE", "bp4d": "BP4D-Spontaneous",
                 "bosphorus": "Bosphorus", "4dme": "4DME"}
LAYOUT_TEXT = {
    "bu3dfe": "<SID>/<SID>_<EX><LV><RC>_F3D.wrl with its .bmp texture and .bnd landmarks",
    "bu4dfe": "<SID>/<Expression>/<NNN>.wrl + .jpg, BU4DFE_BND_V1.1/<SID>/<Expression>/<NNN>.bnd",
    "bp4d": "Sequences_2D+3D/<SID>/<Tk>/<frame>.(wrl|obj) + .jpg",
    "bosphorus": "BosphorusDB[_pN]/<SID>/<SID>_<CLASS>_<CODE>_<n>.bnt + .png, .lm3",
    "4dme": "the annotation sheet + <mesh_dir>/<sub_ID>/<fold_name>/<frame>.(obj|wrl) + images",
}
# (regex on the path relative to the root, reason) for files a layout knows and does not use.
SKIP_RULES = {
    "bu3dfe": [
        (r"_RAW\.wrl$", "RAW mesh: not a sample (another coordinate frame than the F3D mesh)"),
        (r"_RAW\.pse$", "pose landmarks of the RAW mesh: not used"),
        (r"_F2D\.bmp$", "2D photograph: not used"),
        (r"_F3D\.(bmp|bnd)$", "texture or landmarks of an F3D scan that is not in the manifest"),
    ],
    "bu4dfe": [
        (r"^BU_WrlViewer_V2/", "the bundled VRML viewer, not a subject"),
        (r"^BU4DFE_BND_V1\.1/", "landmark release: no manifest frame uses this file (its mesh is missing or rejected)"),
    ],
    "bp4d": [
        (r"^(AUCoding|2DFeatures|3DFeatures)/", "AU codes and tracked features: not used"),
    ],
    "bosphorus": [
        (r"\.lm2$", "2D landmarks (.lm2): not used"),
        (r"\.(png|lm3)$", "texture or landmarks of a scan that is not in the manifest"),
    ],
    "4dme": [
        (r"extras", "the extras sheet (self-reported emotions): not used"),
        (r"^gray_micro", "grey-scale 2D frames: not used"),
    ],
}


def log_summary(dataset: str, manifest: pd.DataFrame, rejects: pd.DataFrame, skipped: pd.DataFrame,
                settings: dict | None = None) -> None:
    """Counts per subject and class, rejects, skips, and the totals against the published release."""
    samples = manifest.drop_duplicates("sample_id")
    n_subjects = samples["subject"].nunique()
    log.info("%s: %d samples (%d mesh files) of %d subjects; rejected: %d, files skipped: %d",
             DISPLAY_NAMES[dataset], len(samples), len(manifest), n_subjects, len(rejects), len(skipped))
    for path, reason in rejects.head(_LOGGED_ROWS).itertuples(index=False):
        log.warning("rejected %s: %s", path, reason)
    if len(rejects) > _LOGGED_ROWS:
        log.warning("... and %d more rejects (rejects.csv)", len(rejects) - _LOGGED_ROWS)
    if len(skipped):
        # one line per reason: a real root holds thousands of unused files (.lm2, RAW meshes)
        by_reason = skipped["reason"].value_counts()
        log.info("skipped files by reason (skipped.csv lists each):\n%s", by_reason.to_string())
    if len(samples):
        # multi-label samples (4DME) count once under each of their classes
        labels = samples.assign(labels=samples["labels"].str.split("|")).explode("labels")
        labels["labels"] = labels["labels"].replace("", "(no label)").fillna("(no label)")
        table = pd.crosstab(labels["subject"], labels["labels"].rename("class"), margins=True, margins_name="total")
        log.info("samples per subject and class:\n%s", table.to_string())
    published = names.PUBLISHED_SIZES[dataset]
    expected = published.per_subject
    if dataset == "bp4d":  # one sequence per task of the configured map
        expected = len((settings or DEFAULT_SETTINGS)["task_classes"])
    if expected is not None and len(samples):
        per_subject = samples.groupby("subject").size()
        odd = per_subject[per_subject != expected]
        if len(odd):
            shown = ", ".join(f"{subject} ({count})" for subject, count in odd.head(_LOGGED_ROWS).items())
            log.warning("%d of %d subjects do not have the release's %d samples each: %s%s", len(odd),
                        len(per_subject), expected, shown, " ..." if len(odd) > _LOGGED_ROWS else "")
    subjects = "an unpublished number of" if published.subjects is None else str(published.subjects)
    log.info("%s found %d subjects, %d samples; the published release has %s subjects, %d %s (%s)",
             DISPLAY_NAMES[dataset], n_subjects, len(samples), subjects, published.samples,
             published.unit, published.source)


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
            for frame, path in _numbered(task_dir, (".wrl", ".obj"), found).items():
                row = _row(
                    "bp4d", f"{subject}_{task_dir.name}", subject, path, sequence=task_dir.name,
                    frame=frame, label=task_classes[task_dir.name], task=task_dir.name, sex=subject[0],
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
    annotations = read_annotations(sheet)
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
