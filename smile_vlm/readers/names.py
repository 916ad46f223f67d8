"""Class lists and file-name parsers of the five datasets (docs/datasets.md)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from smile_vlm.errors import ScanError
from smile_vlm.readers.skeleton import skeleton
from smile_vlm.settings import dataset_defaults

BASIC_EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]

# Class index = position in the list. BP4D keeps the six basic emotions first so that a model
# trained on BU-4DFE scores BP4D's T1/T8 sequences with the same indices.
CLASSES: dict[str, list[str]] = {
    "bu3dfe": BASIC_EMOTIONS + ["neutral"],
    "bu4dfe": list(BASIC_EMOTIONS),
    "bp4d": BASIC_EMOTIONS + ["embarrassment", "pain"],
    "bosphorus": BASIC_EMOTIONS + ["neutral"],
    "4dme": ["positive", "negative", "surprise", "repression", "others"],
}

BU3DFE_EXPRESSIONS = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happiness",
    "SA": "sadness",
    "SU": "surprise",
    "NE": "neutral",
}

BU4DFE_FOLDERS = {
    "Angry": "anger",
    "Disgust": "disgust",
    "Fear": "fear",
    "Happy": "happiness",
    "Sad": "sadness",
    "Surprise": "surprise",
}

BOSPHORUS_EMOTIONS = {
    "ANGER": "anger",
    "DISGUST": "disgust",
    "FEAR": "fear",
    "HAPPY": "happiness",
    "SADNESS": "sadness",
    "SURPRISE": "surprise",
}

# Target emotion of each BP4D-Spontaneous task (Zhang et al. 2014); a default, overridable by
# settings["task_classes"] because cross-dataset papers keep only some of them (T1, T8).
BP4D_TASK_CLASSES = dataset_defaults("bp4d")["task_classes"]  # the schema's datasets.bp4d.task_classes

BU3DFE_RACES = {
    "WH": "white",
    "AE": "east-asian",
    "AM": "middle-east-asian",
    "BL": "black",
    "IN": "indian",
    "LA": "hispanic-latino",
}

_BU3DFE_PATTERN = re.compile(
    r"^(?P<sex>[FM])(?P<number>\d{4})_(?P<expression>AN|DI|FE|HA|NE|SA|SU)(?P<level>\d{2})"
    r"(?P<race>WH|AE|AM|BL|IN|LA)_(?P<kind>F3D|RAW|F2D)\.(?P<ext>wrl|bmp|bnd|pse)$"
)


@dataclass(frozen=True)
class Bu3dfeName:
    subject: str  # F0001
    sex: str  # F or M
    expression: str  # two-letter code, e.g. AN
    label: str  # canonical class name
    intensity: int  # 0 (neutral) .. 4
    race: str  # two-letter code, e.g. WH
    kind: str  # F3D, RAW or F2D
    base: str  # F0001_AN01WH, the sample id


def parse_bu3dfe_name(name: str | Path) -> Bu3dfeName:
    """Parse ``F0001_AN01WH_F3D.wrl``; raise ScanError for names outside §1.2's grammar."""
    basename = Path(name).name
    stem, dot, extension = basename.rpartition(".")
    # Copies made on Windows or from DVDs may upper-case the extension ('.WRL'); the rest of
    # the name keeps its case, since the codes (F3D, AN, WH) are upper-case in every release.
    match = _BU3DFE_PATTERN.match(f"{stem}{dot}{extension.lower()}" if dot else basename)
    if match is None:
        raise ScanError(name, "not a BU-3DFE file name (<SID>_<EX><LV><RC>_<KIND>.<ext>)")
    level = int(match["level"])
    # Neutral exists only at level 00 and the expressions only at 01..04 (§1.2).
    if (match["expression"] == "NE") != (level == 0) or level > 4:
        raise ScanError(name, f"invalid intensity level {match['level']} for {match['expression']}")
    return Bu3dfeName(
        subject=f"{match['sex']}{match['number']}",
        sex=match["sex"],
        expression=match["expression"],
        label=BU3DFE_EXPRESSIONS[match["expression"]],
        intensity=level,
        race=match["race"],
        kind=match["kind"],
        base=basename.rsplit("_", 1)[0],
    )


@dataclass(frozen=True)
class BosphorusName:
    subject: str  # bs000
    scan_class: str  # N, E, LFAU, UFAU, CAU, YR, PR, CR, O, IGN
    code: str  # e.g. HAPPY, 12LW, A26A12lw (case kept)
    repeat: int  # 0-based repeat index
    label: str  # canonical class name, '' for classes we do not classify


def parse_bosphorus_name(name: str | Path) -> BosphorusName:
    """Parse ``bs000_E_HAPPY_0.bnt`` (or a bare stem) into its four fields (§4.2)."""
    stem = Path(name).name.split(".", 1)[0]
    fields = stem.split("_")
    if len(fields) != 4 or not re.fullmatch(r"bs\d{3}", fields[0]) or not fields[3].isdigit():
        raise ScanError(name, "not a Bosphorus file name (bsNNN_<CLASS>_<CODE>_<n>)")
    subject, scan_class, code, repeat = fields
    if scan_class == "E":
        label = BOSPHORUS_EMOTIONS.get(code, "")
    elif scan_class == "N" and code == "N":
        label = "neutral"
    else:
        label = ""
    return BosphorusName(subject, scan_class, code, int(repeat), label)


def frame_number(name: str | Path) -> int:
    """The last integer in a file's stem: ``0012.wrl`` -> 12, ``frame_3_000045.obj`` -> 45.

    Padding differs across subjects (BP4D) so frames are always ordered by this number.
    """
    stem = Path(name).name.rsplit(".", 1)[0]
    digits = re.findall(r"\d+", stem)
    if not digits:
        raise ScanError(name, "no frame number in the file name")
    return int(digits[-1])


def subject_key(name: str) -> str:
    """The identity a subject name stands for: Unicode NFKC, stripped, case-folded, then its
    confusable skeleton (readers/skeleton.py).

    'S01', 's01', 'S01 ' and a full-width 'Ｓ01' are one person, and so are a Latin 'A' and a
    Cyrillic 'А'; grouping and leakage checks compare these keys, never the raw spelling.
    """
    return skeleton(unicodedata.normalize("NFKC", str(name)).strip().casefold())


@dataclass(frozen=True)
class PublishedSize:
    subjects: int | None  # None where the publications do not give it
    samples: int
    unit: str  # what one manifest sample is
    source: str
    per_subject: int | None = None  # samples every subject has in the release, where that holds


# Published sizes of the full releases (docs/datasets.md lists the same numbers with their sources);
# the index log compares what it found with them.
# Datasets whose samples are sequences of frames (rendering reads only render.frames of them).
SEQUENCE_DATASETS = ("bu4dfe", "bp4d", "4dme")

PUBLISHED_SIZES = {
    "bu3dfe": PublishedSize(100, 2500, "scans (25 per subject)", "Yin et al., FG 2006", 25),
    "bu4dfe": PublishedSize(101, 606, "sequences (6 per subject)", "Yin et al., FG 2008", 6),
    "bp4d": PublishedSize(41, 328, "task sequences (8 per subject)", "Zhang et al., IVC 2014", 8),
    "bosphorus": PublishedSize(105, 4666, "scans", "Savran et al., BIOID 2008"),
    "4dme": PublishedSize(None, 267, "micro-expression clips", "Li et al., IEEE TAFFC 2022"),
}
