"""4DME micro-expression annotations (docs/datasets.md): one row per clip, multi-hot emotions."""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from smile_vlm.errors import ScanError
from smile_vlm.readers import max_bytes_of, read_limited
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
    "row", "problem",
]
# An apex the annotators did not give; any other non-integer text in a frame cell is an error.
_NO_APEX = {"", "/", "-", "--", "n/a", "na", "none"}
# Words the Emotion cell may join class names with ("Negative+Surprise", "Negative and Surprise").
_EMOTION_JOINERS = {"and"}


def read_annotations(xlsx: str | Path, *, max_bytes: int | None = None) -> pd.DataFrame:
    """Read the labelling sheet into ANNOTATION_COLUMNS, checking every row cell by cell.

    Headers are matched ignoring case, spaces and underscores ('sub_ID', 'Sub ID'). onset,
    apex, offset become nullable integers; the five one-hot columns 0/1 uint8; ``labels``
    pipe-joins the positive classes in CLASSES order and ``label`` is the first of them.
    ``row`` is the spreadsheet row (the header is row 1) and ``problem`` is '' for a usable
    row, else why the clip cannot be used: a one-hot cell that is not 0/1, no class marked,
    an Emotion cell that disagrees with the one-hot cells, frames that are not integers or
    not onset <= apex <= offset, a sub_ID/fold_name that is not a plain folder name (it would
    make the index read outside the dataset), or a repeated (sub_ID, fold_name).
    """
    xlsx = Path(xlsx)
    workbook = _read_workbook(xlsx, max_bytes)
    try:
        sheet = pd.read_excel(workbook, dtype=object, engine="openpyxl")
    except Exception as err:  # openpyxl raises zipfile/KeyError/... on a damaged workbook
        raise ScanError(xlsx, f"cannot read the annotation workbook: {type(err).__name__}: {err}") from None
    renamed, headers = {}, {}
    for header in sheet.columns:
        key = re.sub(r"[\s_]+", "", str(header)).lower()
        if key in _REQUIRED and _REQUIRED[key] not in renamed.values():
            renamed[header] = _REQUIRED[key]
            headers[_REQUIRED[key]] = str(header).strip()
    missing = sorted(set(_REQUIRED.values()) - set(renamed.values()))
    if missing:
        raise ScanError(xlsx, f"missing columns: {', '.join(missing)}")
    sheet = sheet[list(renamed)].rename(columns=renamed)
    sheet["row"] = sheet.index + 2
    sheet = sheet.dropna(how="all", subset=list(renamed.values())).reset_index(drop=True)

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
    # plain lists: a Series would turn the None of a bad cell into NaN
    hot_cells = {name: [_one_hot(value) for value in sheet[name]] for name in classes}
    for name in classes:
        table[name] = np.array([1 if v == 1 else 0 for v in hot_cells[name]], dtype=np.uint8)
    hot = table[classes].to_numpy().astype(bool)
    table["labels"] = ["|".join(c for c, on in zip(classes, row) if on) for row in hot]
    table["label"] = table["labels"].str.split("|").str[0]
    table["row"] = sheet["row"].astype(int).to_numpy()
    problems, seen = [], {}
    for k in range(len(table)):
        problem = _row_problem(sheet.iloc[k], table.iloc[k], {n: hot_cells[n][k] for n in classes}, headers)
        key = (table["subject"].iloc[k], table["clip"].iloc[k])
        if not problem and key in seen:
            problem = f"sub_ID {key[0]!r}, fold_name {key[1]!r} repeat row {seen[key]}"
        seen.setdefault(key, int(table["row"].iloc[k]))
        problems.append(problem)
    table["problem"] = problems
    return table[ANNOTATION_COLUMNS]


def _read_workbook(xlsx: Path, max_bytes: int | None) -> io.BytesIO:
    """The workbook's bytes, read as a scan is (a regular file within the per-file limit: a FIFO
    or a link to /dev/zero is refused before any read), whose members also unpack within the limit.

    An .xlsx is a zip: a few KB can declare gigabytes of sheet XML. zipfile never unpacks more
    than a member's declared size, so checking the declared sizes bounds what openpyxl can unpack.
    """
    if not os.path.lexists(xlsx):
        raise ScanError(xlsx, "annotation file not found")
    data = read_limited(xlsx, max_bytes)
    limit = max_bytes_of(None) if max_bytes is None else max_bytes
    try:
        unpacked = sum(member.file_size for member in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except (zipfile.BadZipFile, ValueError) as err:
        raise ScanError(xlsx, f"cannot read the annotation workbook: not an .xlsx (zip) file: {err}") from None
    if unpacked > limit:
        raise ScanError(xlsx, f"workbook unpacks to {unpacked / 2**20:.1f} MB, over the {limit / 2**20:g} MB "
                              "per-file limit (index.max_file_mb)")
    return io.BytesIO(data)


def _row_problem(cells: pd.Series, row: pd.Series, hot: dict, headers: dict) -> str:
    """Why one sheet row cannot be used ('' when it can); names the column of the bad cell."""
    for name in ("subject", "clip"):
        problem = plain_name_problem(row[name])
        if problem:
            return f"{headers[name]} {row[name]!r} {problem}"
    for name in ("onset", "offset"):
        if pd.isna(row[name]):
            return f"{headers[name]} cell {_shown(cells[name])} is not an integer frame number"
    if pd.isna(row["apex"]) and _text(cells["apex"]).lower() not in _NO_APEX:
        return f"{headers['apex']} cell {_shown(cells['apex'])} is not an integer frame number"
    onset, offset = int(row["onset"]), int(row["offset"])
    if onset > offset:
        return f"onset {onset} is after offset {offset}"
    if not pd.isna(row["apex"]) and not onset <= int(row["apex"]) <= offset:
        return f"apex {int(row['apex'])} is outside onset..offset ({onset}..{offset})"
    for name, value in hot.items():
        if value is None:
            return f"{headers[name]} cell {_shown(cells[name])} is not 0 or 1"
    marked = {name for name, value in hot.items() if value == 1}
    if not marked:
        return "no emotion class is marked 1 in the one-hot columns"
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", row["emotion"]) if w.lower() not in _EMOTION_JOINERS]
    unknown = [w for w in words if w not in hot]
    if unknown:
        return f"{headers['emotion']} {row['emotion']!r} names {unknown[0]!r}, not one of {', '.join(hot)}"
    if set(words) != marked:
        ordered = [name for name in hot if name in marked]
        return f"{headers['emotion']} {row['emotion']!r} disagrees with the one-hot columns ({'+'.join(ordered)})"
    return ""


def plain_name_problem(name: str) -> str:
    """'' when ``name`` can be used as one folder name; else why not (a path, '..', empty)."""
    if not name:
        return "is empty"
    if "/" in name or "\\" in name or "\0" in name:
        return "is a path, not a plain name (it contains a separator)"
    if ".." in name or name in (".",):
        return "contains '..', not a plain name"
    if re.match(r"^[A-Za-z]:", name):
        return "is a drive path, not a plain name"
    return ""


def _one_hot(value) -> int | None:
    """1 or 0 for a one-hot cell (1, 1.0, '1', True); None for anything else (blank, 'x', 0.5)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not pd.isna(value):
        return int(value) if float(value) in (0.0, 1.0) else None
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def _shown(value) -> str:
    return "(empty)" if value is None or (isinstance(value, float) and np.isnan(value)) else repr(value)


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
