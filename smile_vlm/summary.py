"""Markdown renderings of the experiment tables (``smile_vlm.report``).

- ``summary_markdown``: every table on one page (results/tables/summary.md), our ``mean ± std``
  rows beside the paper's, per-fold rows folded away.
- ``update_readme`` / ``readme_block``: the README's result blocks, our mean rows written from a
  table CSV with a digest, so a number typed by hand (or a stale block) is detectable.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from smile_vlm.atomic import write_text
from smile_vlm.errors import ScanError
from smile_vlm.report import ID_COLUMNS, REPORTED_MARK, paper_labels
from smile_vlm.settings import PLAIN_ALPHA, RANDOM_INIT


# --------------------------------------------------------------------------- summary page

def summary_markdown(table_csvs: list[str | Path], out_md: str | Path,
                     data_sources: dict[str, str] | None = None) -> str:
    """Every table on one markdown page; returns the text written to ``out_md``.

    Per experiment table: our ``mean ± std`` rows first, then the paper's rows marked
    "reported on the real dataset", then our per-fold rows collapsed in a ``<details>`` block.
    Other CSVs (e.g. ``ablation.csv``) are shown as they are. ``data_sources`` maps a table name
    (the CSV's stem) to where its data came from (e.g. ``synthetic`` or the dataset root).
    """
    data_sources = data_sources or {}
    lines = [
        "# Results summary",
        "",
        "These numbers come from the **synthetic default data** unless the dataset roots in "
        f"`config.yaml` point to the real datasets. Rows marked *{REPORTED_MARK}* are the paper's; "
        "they are comparable to ours only on the real data. Accuracy in %, F1 in [0, 1], "
        "`mean ± std` over folds (sample standard deviation).",
        "",
    ]
    for path in map(Path, table_csvs):
        table = pd.read_csv(path, dtype={"fold": str, "method": str})
        facts = [f"`{path.name}`"]
        if path.stem in data_sources:
            facts.append(f"data: {data_sources[path.stem]}")
        if "source" in table.columns:
            facts.append(f"prompts source: {prompts_description(table)}")
        lines += [f"## {paper_labels('table_titles').get(path.stem, path.stem)}", "", "; ".join(facts), ""]
        if "source" in table.columns:
            lines += _experiment_markdown(table)
            note = decision_note(table)
            if note:
                lines += [note, ""]
        else:
            lines += [_markdown_table(_formatted(table)), ""]
    text = "\n".join(lines)
    write_text(out_md, text)
    return text


PROMPT_SOURCES = {
    "label": "label (each sample's class chooses its prompt, as in the paper)",
    "pseudo": "pseudo (the model's own zero-shot pseudo-labels choose the prompts; no label reaches training)",
}


def prompts_description(table: pd.DataFrame) -> str:
    """Which prompts source our rows used; what else each row trained on is its ``supervision``."""
    ours = table[table["source"] == "ours"]
    sources = sorted(ours["prompts"].dropna().astype(str).unique()) if "prompts" in ours else []
    return ", ".join(PROMPT_SOURCES.get(source, source) for source in sources) or "unknown"


def _experiment_markdown(table: pd.DataFrame) -> list[str]:
    ours = table[table["source"] == "ours"]
    means, folds = ours[ours["fold"] == "mean"], ours[ours["fold"] != "mean"]
    reported = table[table["source"] == "reported"]
    metrics = [c for c in table.columns if c not in ID_COLUMNS and not c.endswith("_std")]
    lines = []
    for title, columns in _metric_groups(metrics):
        if title:
            lines += [f"**{title}**", ""]
        headers = ["method", "supervision", "init", "setting", "folds", *[_header(c) for c in columns]]
        rows = [[row["method"], _text(row.get("supervision")), _init(row), "ours",
                 str(int((folds["method"] == row["method"]).sum())),
                 *[_mean_std(row.get(c), row.get(f"{c}_std"), c) for c in columns]]
                for _, row in means.iterrows()]
        for _, row in reported.iterrows():
            setting = row.get("setting")
            prefix = f"{setting}; " if isinstance(setting, str) and setting else ""
            rows.append([row["method"], "", "", f"{prefix}*{REPORTED_MARK}*", "",
                         *[_number(row.get(c), c) for c in columns]])
        lines += [_markdown_table(pd.DataFrame(rows, columns=headers)), ""]
        if len(folds):
            per_fold = [[row["method"], row["fold"], *[_number(row.get(c), c) for c in columns]]
                        for _, row in folds.iterrows()]
            lines += ["<details><summary>per-fold rows</summary>", "",
                      _markdown_table(pd.DataFrame(per_fold, columns=["method", "fold", *headers[5:]])),
                      "", "</details>", ""]
    return lines


def decision_note(table: pd.DataFrame) -> str | None:
    """The line printed under a multi-label table: how its label sets were decided."""
    if "decision" not in table.columns:
        return None
    values = table.loc[table["source"] == "ours", "decision"].dropna().astype(str).unique()
    return f"Label sets decided by: {'; '.join(values)}." if len(values) else None


def _text(value) -> str:
    return "" if _is_missing(value) else str(value)


def _init(row: pd.Series) -> str:
    """Where the row's vision encoder started; a table written before the column existed
    holds only from-scratch rows."""
    init = _text(row.get("init", RANDOM_INIT))
    alpha = _text(row.get("wise_alpha"))  # plain fine-tuning (1) is not spelled out
    return f"{init}, WiSE-FT alpha {float(alpha):g}" if alpha and float(alpha) != PLAIN_ALPHA else init


def _metric_groups(metrics: list[str]) -> list[tuple[str, list[str]]]:
    """Multi-label tables split like the paper's Table V: an F1 block and an accuracy block."""
    f1 = [m for m in metrics if m.startswith("f1_")]
    if not f1:
        return [("", metrics)]
    accuracy = [m for m in metrics if m.startswith("accuracy_")]
    rest = [m for m in metrics if m not in f1 and m not in accuracy]
    return [("F1-score", f1), ("Accuracy (%)", accuracy + rest)]


def _header(column: str) -> str:
    for prefix in ("f1_", "accuracy_"):
        if column.startswith(prefix):
            return column[len(prefix):]
    return {"accuracy": "accuracy (%)", "macro_f1": "macro-F1",
            "linear_probe_accuracy": "linear probe (%)"}.get(column, column)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _number(value, column: str = "") -> str:
    """F1 with 4 decimals (the paper's), percentages and other reals with 2."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    if float(value).is_integer() and not column:
        return str(int(value))
    return f"{float(value):.4f}" if "f1" in column else f"{float(value):.2f}"


def _mean_std(mean, std, column: str) -> str:
    text = _number(mean, column)
    return f"{text} ± {_number(std, column)}" if text and not _is_missing(std) else text


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: [_number(v, "" if table[c].dtype.kind in "iub" else c) for v in table[c]]
                         for c in table.columns})


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return "" if _is_missing(value) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- README result blocks

README_COMMAND = "smile-vlm readme-results"
_BLOCK = re.compile(r"<!-- results:(?P<name>[\w.-]+) start -->\n(?P<body>.*?)<!-- results:(?P=name) end -->",
                    re.DOTALL)
_BLOCK_DIGEST = re.compile(r"<!-- table sha256 (?P<table>[0-9a-f]{12}); block sha256 (?P<block>[0-9a-f]{12}) -->\n\Z")
PLACEHOLDER = ("Not generated yet: run the table's target, then `{command} --tables {table}`; "
               "this block is written by that command, never by hand.\n")


def readme_block(table_csv: str | Path) -> str:
    """The README's result block of one experiment table: our mean rows, written from the CSV.

    The body names the CSV it was written from and ends with a comment holding the sha256 of the
    CSV and of the lines above it, so a hand-edited number (or a stale block) is detectable.
    """
    path = Path(table_csv)
    table = pd.read_csv(path, dtype={"fold": str, "method": str})
    means = table[(table["source"] == "ours") & (table["fold"] == "mean")]
    means = means[~means["method"].str.contains(r" \(.* only\)$", regex=True)]  # multi-view rows only
    multi_label = "f1_average" in table.columns
    columns = (["f1_average", "accuracy_average", "linear_probe_accuracy"] if multi_label
               else ["accuracy", "macro_f1", "linear_probe_accuracy"])
    headers = {"accuracy": "zero-shot accuracy (%)", "macro_f1": "macro-F1", "f1_average": "average F1",
               "accuracy_average": "average accuracy (%)", "linear_probe_accuracy": "linear probe (%)"}
    folds = table[(table["source"] == "ours") & (table["fold"] != "mean")]
    rows = [[row["method"], _text(row.get("supervision")), _init(row), _text(row.get("prompts")),
             str(int((folds["method"] == row["method"]).sum())),
             *[_mean_std(row.get(c), row.get(f"{c}_std"), c) for c in columns]]
            for _, row in means.iterrows()]
    frame = pd.DataFrame(rows, columns=["variant", "supervision", "init", "prompts", "folds",
                                        *[headers[c] for c in columns]])
    lines = [f"Written by `{README_COMMAND} --tables {path.as_posix()}` from `{path.as_posix()}` "
             "(mean ± sample standard deviation over folds).", "", _markdown_table(frame), ""]
    if multi_label:
        note = decision_note(table)
        lines += [note, ""] if note else []
    body = "\n".join(lines) + "\n"
    return body + f"<!-- table sha256 {_sha(path.read_bytes())}; block sha256 {_sha(body.encode())} -->\n"


def readme_blocks(text: str) -> dict[str, str]:
    """``{name: body}`` of every ``<!-- results:<name> start -->`` ... ``end -->`` block of a README."""
    return {match["name"]: match["body"] for match in _BLOCK.finditer(text)}


def cited_table(body: str) -> str | None:
    """The CSV a generated block was written from (None for the placeholder)."""
    match = re.search(r"from `([^`]+)`", body)
    return match.group(1) if match and _BLOCK_DIGEST.search(body) else None


def block_is_intact(body: str) -> bool:
    """True when a generated block's lines are exactly those its digest was computed on."""
    match = _BLOCK_DIGEST.search(body)
    return bool(match) and _sha(body[:match.start()].encode()) == match["block"]


def update_readme(readme: str | Path, table_csvs: list[str | Path], check: bool = False) -> list[str]:
    """Rewrite the result block of each table (block name = the CSV's stem) in ``readme``.

    Returns the names of the blocks whose text changed (with ``check``, the ones that would; the
    file is then left alone). A table whose block is missing from the README is an error, so a
    result can never silently go unpublished.
    """
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    changed = []
    for table_csv in map(Path, table_csvs):
        name = table_csv.stem
        if name not in blocks:
            raise ScanError(readme, f"no block '<!-- results:{name} start -->' ... '<!-- results:{name} end -->' "
                                    f"for {table_csv}; add the two marker lines where the table belongs")
        body = readme_block(table_csv)
        if body != blocks[name]:
            changed.append(name)
            start, end = f"<!-- results:{name} start -->\n", f"<!-- results:{name} end -->"
            text = text.replace(start + blocks[name] + end, start + body + end)
    if changed and not check:
        write_text(readme, text)
    return changed


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]
