"""4DME micro-expression annotations (datasets.md §5.2): one row per clip, multi-hot emotions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from smile_vlm.errors import ScanError
from smile_vlm.readers.names import CLASSES

# Normalised header key (lower case, no spaces/underscores) -> our column name.
_REQUIRED = {
    "subid": "subject",
    "foldname": "clip",
    "onset": "onset",
    "apex": "apex",
    "offset": "offset",
    "aus": "aus",
    "emotion": "emotion",
    **{name: name for name in CLASSES["4dme"]},
}

ANNOTATION_COLUMNS = [
    "subject", "clip", "onset", "apex", "offset", "aus", "emotion", *CLASSES["4dme"], "labels", "label",
]


def read_annotations(xlsx: str | Path) -> pd.DataFrame:
    """Read the labelling sheet into ANNOTATION_COLUMNS.

    Headers are matched ignoring case, spaces and underscores ('sub_ID', 'Sub ID'). onset,
    apex, offset become nullable integers (<NA> where the cell is not a number; the indexer
    rejects such clips); the five one-hot columns become 0/1 uint8; ``labels`` pipe-joins the
    positive classes in CLASSES order and ``label`` is the first of them ('' when none).
    """
    xlsx = Path(xlsx)
    try:
        sheet = pd.read_excel(xlsx, dtype=object, engine="openpyxl")
    except FileNotFoundError:
        raise ScanError(xlsx, "annotation file not found") from None
    except Exception as err:  # openpyxl raises zipfile/KeyError/... on a damaged workbook
        raise ScanError(xlsx, f"cannot read the annotation workbook: {type(err).__name__}: {err}") from None
    renamed = {}
    for header in sheet.columns:
        key = re.sub(r"[\s_]+", "", str(header)).lower()
        if key in _REQUIRED and _REQUIRED[key] not in renamed.values():
            renamed[header] = _REQUIRED[key]
    missing = sorted(set(_REQUIRED.values()) - set(renamed.values()))
    if missing:
        raise ScanError(xlsx, f"missing columns: {', '.join(missing)}")
    sheet = sheet[list(renamed)].rename(columns=renamed)
    sheet = sheet.dropna(how="all").reset_index(drop=True)

    table = pd.DataFrame(
        {
            "subject": sheet["subject"].map(_identifier),
            "clip": sheet["clip"].map(_identifier),
            **{name: _integers(sheet[name]) for name in ("onset", "apex", "offset")},
            "aus": sheet["aus"].map(_text),
            "emotion": sheet["emotion"].map(_text),
        }
    )
    classes = CLASSES["4dme"]
    for name in classes:
        values = pd.to_numeric(sheet[name], errors="coerce").fillna(0).to_numpy()
        table[name] = (values > 0).astype(np.uint8)
    hot = table[classes].to_numpy().astype(bool)
    table["labels"] = ["|".join(c for c, on in zip(classes, row) if on) for row in hot]
    table["label"] = table["labels"].str.split("|").str[0]
    return table[ANNOTATION_COLUMNS]


def _identifier(value) -> str:
    """Excel stores numeric ids as floats: 1.0 -> '1'; text is kept, stripped."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _integers(column: pd.Series) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    whole = numbers.where(numbers == np.floor(numbers))
    return whole.astype("Int64")
