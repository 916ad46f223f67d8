"""Tables: one per experiment, from the per-fold evaluation JSONs, and a one-page summary.

A table has our rows (per method: one row per fold, then one ``mean`` row with the standard
deviation over folds in ``<metric>_std``) followed by the rows the paper reports on the real
dataset, marked ``source = reported``. Accuracies are in percent, F1 in [0, 1], as in the paper.

Single-label experiments (Tables II-IV): columns ``accuracy, macro_f1, linear_probe_accuracy``.
Multi-label experiments (4DME, Table V): ``f1_<class>`` and ``accuracy_<class>`` per class plus
``f1_average`` and ``accuracy_average`` (the paper's per-class F1 / accuracy of each binary
decision and their average over classes), and ``linear_probe_accuracy``.

Every row names its training signal: ``prompts`` (the prompts source, ``label`` or ``pseudo``)
and ``supervision`` (``model.supervision``: e.g. "class prompts (labels)", "cross-entropy on
labels + class prompts (labels)", "pseudo-label prompts (label-free)"). Multi-label tables add
``decision``: the rule and logit scale that turned scores into label sets (evaluate.py).

An evaluation JSON may carry ``single_view: {view name: metrics}`` (the model fed one view
alone); each view then gets its own method ``"<variant> (<view> only)"`` beside the multi-view
rows, like the paper's left/right/front rows of Table V.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from smile_vlm.atomic import write_csv, write_text
from smile_vlm.errors import ScanError

# Metrics that a single-label evaluation JSON carries (fractions) and their table columns.
_SCALAR_METRICS = {
    "accuracy": ("accuracy", 100.0),
    "macro_f1": ("macro_f1", 1.0),
    "linear_probe_accuracy": ("linear_probe_accuracy", 100.0),
}
_ID_COLUMNS = ["source", "method", "fold", "setting", "prompts", "supervision", "decision", "n_test"]
_TEXT_COLUMNS = ("prompts", "supervision", "decision")  # per-row facts a method's mean row keeps
REPORTED_MARK = "reported on the real dataset"

# Headings of the paper's tables, by experiment (= reported.yaml key); others use their name.
TABLE_TITLES = {
    "bu3dfe_subset1": "Table II: BU-3DFE Subset I, accuracy (%)",
    "bu3dfe_subset2": "Table II: BU-3DFE Subset II, accuracy (%)",
    "bosphorus": "Table II: Bosphorus, accuracy (%)",
    "bu4dfe": "Table III: BU-4DFE, accuracy (%)",
    "bp4d": "Table IV (a): BP4D-Spontaneous recognition, accuracy (%)",
    "bp4d_cross": "Table IV (b): BU-4DFE -> BP4D cross-dataset, accuracy (%)",
    "4dme": "Table V: 4DME micro-expressions, per-class F1 and accuracy (%)",
    "ablation": "Fig. 2 data: ablation of the three losses, accuracy (%)",
}


def reported_rows(name: str) -> list[dict]:
    """The paper's rows for a table (empty when the paper has none for it)."""
    text = resources.files("smile_vlm").joinpath("configs/reported.yaml").read_text()
    return yaml.safe_load(text).get(name, [])


# --------------------------------------------------------------------------- evaluation JSONs

def read_evaluation(path: str | Path) -> dict:
    """One evaluation JSON, checked for the keys every table needs."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ScanError(path, f"unreadable evaluation JSON ({error})") from error
    missing = [key for key in ("variant", "k") if key not in result]
    if missing:
        raise ScanError(path, f"evaluation JSON lacks {missing}")
    return result


def single_view_method(variant: str, view: str) -> str:
    return f"{variant} ({view} only)"


def metric_columns(metrics: dict, multi_label: bool, classes: list[str]) -> dict:
    """Table columns of one metrics dict (the multi-view result or one single-view entry)."""
    columns = {}
    if multi_label:
        f1, per_class_accuracy = metrics.get("per_class_f1") or {}, metrics.get("per_class_accuracy") or {}
        for name in classes:
            columns[f"f1_{name}"] = _scaled(f1.get(name), 1.0)
            columns[f"accuracy_{name}"] = _scaled(per_class_accuracy.get(name), 100.0)
        columns["f1_average"] = _scaled(metrics.get("average_f1"), 1.0)
        columns["accuracy_average"] = _scaled(metrics.get("average_accuracy"), 100.0)
        columns["linear_probe_accuracy"] = _scaled(metrics.get("linear_probe_accuracy"), 100.0)
    else:
        for key, (column, scale) in _SCALAR_METRICS.items():
            columns[column] = _scaled(metrics.get(key), scale)
    return columns


def multilabel_metric_names(classes: list[str]) -> list[str]:
    """Column order of a multi-label table: F1 per class and average, then accuracy likewise."""
    names = [*classes, "average"]
    return [f"f1_{c}" for c in names] + [f"accuracy_{c}" for c in names] + ["linear_probe_accuracy"]


def fold_rows(evals: list[str | Path], prompts_source: str, view_rows: bool = True) -> pd.DataFrame:
    """One row per (method, fold): the multi-view result, then each single-view result.

    Rows carry ``_variant_rank`` and ``_view_rank`` so methods keep the evaluations' order,
    each variant's single-view methods right after it.
    """
    results = [(path, read_evaluation(path)) for path in evals]
    multi_label = _common_label_mode(results)
    classes = _multilabel_classes(results) if multi_label else []
    variant_rank: dict[str, int] = {}
    view_rank: dict[str, int] = {}
    rows = []
    for _, result in results:
        variant = str(result["variant"])
        rank = variant_rank.setdefault(variant, len(variant_rank))
        entries = [(variant, 0, result)]
        for view, metrics in (result.get("single_view") or {}).items() if view_rows else ():
            entries.append((single_view_method(variant, view), 1 + view_rank.setdefault(view, len(view_rank)),
                            metrics))
        facts = {"prompts": result.get("prompts_source", prompts_source),
                 "supervision": result.get("supervision"), "decision": decision_text(result)}
        for method, order, metrics in entries:
            rows.append({"source": "ours", "method": method, "fold": str(result["k"]), **facts,
                         "n_test": metrics.get("n_test", result.get("n_test")),
                         "_variant_rank": rank, "_view_rank": order,
                         **metric_columns(metrics, multi_label, classes)})
    folds = pd.DataFrame(rows)
    folds.attrs.update(multi_label=multi_label, classes=classes)
    return folds


def decision_text(result: dict) -> str | None:
    """How a multi-label evaluation decided its label sets, e.g. "above_uniform at logit scale 14.29
    (training 1/tau, tau = 0.07)"; None for single-label (argmax)."""
    decision = result.get("multilabel_decision")
    if not result.get("multi_label"):
        return None
    if not decision:
        return "unrecorded"
    source = decision.get("scale_source")
    return f"{decision['rule']} at logit scale {float(decision['scale']):.4g}" + (f" ({source})" if source else "")


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """One ``mean`` row per method, with ``<metric>_std`` over its folds (ddof=1)."""
    metrics = _metrics_of(folds)
    summary = []
    for method, group in folds.groupby("method", sort=False):
        row = {"source": "ours", "method": method, "fold": "mean", "n_test": group["n_test"].sum()}
        for column in _TEXT_COLUMNS:
            values = group[column].dropna().astype(str).unique() if column in group else []
            row[column] = "; ".join(values) if len(values) else None
        row.update({c: group[c].iloc[0] for c in ("_variant_rank", "_view_rank") if c in group})
        for metric in metrics:
            values = group[metric].dropna().to_numpy(dtype=float)
            row[metric] = float(values.mean()) if len(values) else np.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        summary.append(row)
    return pd.DataFrame(summary)


def reported_frame(name: str, multi_label: bool) -> pd.DataFrame:
    """The paper's rows; Table V's nested per-class dicts flattened to ``f1_<class>`` columns."""
    rows = []
    for entry in reported_rows(name):
        row = {"source": "reported", "method": entry["method"], "setting": entry.get("setting")}
        for metric in ("f1", "accuracy"):
            value = entry.get(metric)
            if isinstance(value, dict):
                if multi_label:
                    row.update({f"{metric}_{cls}": float(v) for cls, v in value.items()})
            elif value is not None and not multi_label:
                row[metric] = float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def build_table(experiment: dict, evals: list[str | Path]) -> pd.DataFrame:
    prompts_source = experiment.get("prompts_source", "label")
    # Single-view rows only where the paper's table has them (Table V: left, right, front).
    folds = fold_rows(evals, prompts_source, view_rows=bool(experiment.get("view_rows", False)))
    multi_label, classes = folds.attrs["multi_label"], folds.attrs["classes"]
    ours = pd.concat([folds, summarize(folds)], ignore_index=True)
    ours["_fold_rank"] = ours["fold"].map(lambda f: int(f) if str(f).isdigit() else 10**9)
    ours = ours.sort_values(["_variant_rank", "_view_rank", "_fold_rank"], kind="stable")
    reported = reported_frame(experiment.get("reported", experiment["name"]), multi_label)
    table = pd.concat([ours, reported], ignore_index=True)
    table["n_test"] = table["n_test"].astype("Int64")  # a count: "12", not "12.0", blank when reported

    if multi_label:
        extra = [c[len("f1_"):] for c in reported.columns if c.startswith("f1_")]
        metrics = multilabel_metric_names(list(dict.fromkeys(classes + [c for c in extra if c != "average"])))
    else:
        metrics = [column for column, _ in _SCALAR_METRICS.values()]
    columns = [c for c in _ID_COLUMNS if multi_label or c != "decision"]
    for metric in metrics:
        columns += [metric, f"{metric}_std"]
    return table.reindex(columns=columns)  # a fixed schema: every table of a kind has the same columns


def write_table(experiment: dict, evals: list[str | Path], out: str | Path) -> pd.DataFrame:
    table = build_table(experiment, evals)
    write_csv(out, table.round(4))
    return table


def _scaled(value, scale: float) -> float:
    return np.nan if value is None else float(value) * scale


def _metrics_of(folds: pd.DataFrame) -> list[str]:
    return [c for c in folds.columns if c not in _ID_COLUMNS and not c.startswith("_")]


def _common_label_mode(results: list[tuple]) -> bool:
    if not results:
        raise ValueError("a table needs at least one evaluation JSON")
    first_path, first = results[0]
    mode = bool(first.get("multi_label", False))
    for path, result in results[1:]:
        if bool(result.get("multi_label", False)) != mode:
            raise ScanError(path, f"multi_label={not mode} but {first_path} has multi_label={mode}; "
                                  "one table cannot mix single- and multi-label evaluations")
    return mode


def _multilabel_classes(results: list[tuple]) -> list[str]:
    classes: dict[str, None] = {}
    for _, result in results:
        for name in result.get("classes") or list(result.get("per_class_f1") or {}):
            classes.setdefault(name)
    return list(classes)


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
        lines += [f"## {TABLE_TITLES.get(path.stem, path.stem)}", "", "; ".join(facts), ""]
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
    metrics = [c for c in table.columns if c not in _ID_COLUMNS and not c.endswith("_std")]
    lines = []
    for title, columns in _metric_groups(metrics):
        if title:
            lines += [f"**{title}**", ""]
        headers = ["method", "supervision", "setting", "folds", *[_header(c) for c in columns]]
        rows = [[row["method"], _text(row.get("supervision")), "ours", str(int((folds["method"] == row["method"]).sum())),
                 *[_mean_std(row.get(c), row.get(f"{c}_std"), c) for c in columns]]
                for _, row in means.iterrows()]
        for _, row in reported.iterrows():
            setting = row.get("setting")
            prefix = f"{setting}; " if isinstance(setting, str) and setting else ""
            rows.append([row["method"], "", f"{prefix}*{REPORTED_MARK}*", "", *[_number(row.get(c), c) for c in columns]])
        lines += [_markdown_table(pd.DataFrame(rows, columns=headers)), ""]
        if len(folds):
            per_fold = [[row["method"], row["fold"], *[_number(row.get(c), c) for c in columns]]
                        for _, row in folds.iterrows()]
            lines += ["<details><summary>per-fold rows</summary>", "",
                      _markdown_table(pd.DataFrame(per_fold, columns=["method", "fold", *headers[4:]])),
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
    rows = [[row["method"], _text(row.get("supervision")), _text(row.get("prompts")),
             str(int((folds["method"] == row["method"]).sum())),
             *[_mean_std(row.get(c), row.get(f"{c}_std"), c) for c in columns]]
            for _, row in means.iterrows()]
    frame = pd.DataFrame(rows, columns=["variant", "supervision", "prompts", "folds", *[headers[c] for c in columns]])
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
