"""The index's accounting: every file under the root that is neither in the manifest nor a reject,
with the reason it was not used (``sweep``), and the summary the index logs (``log_summary``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from smile_vlm.index.layouts import Found
from smile_vlm.readers import names

SKIP_COLUMNS = ["path", "reason"]
_LOGGED_ROWS = 20  # rejects/skips shown one by one in the log; the CSVs have all of them

log = logging.getLogger("smile_vlm.index")  # the index job's log, whichever of its modules writes


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
        from smile_vlm.readers import file_kind

        try:
            return f"not a regular file ({file_kind(os.lstat(path).st_mode)}); only regular files are read"
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
        (r"^AUCoding/AU_OCC/", "AU occurrence codes of no sequence in the manifest"),
        (r"^(AUCoding|2DFeatures|3DFeatures)/", "AU intensities and tracked features: not used"),
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
        expected = len((settings or {}).get("task_classes", names.BP4D_TASK_CLASSES))
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

