"""Tables: one per experiment, from the per-fold evaluation JSONs.

A table has our rows (per method: one row per fold, then one ``mean`` row with the standard
deviation over folds in ``<metric>_std``) followed by the rows the paper reports on the real
dataset, marked ``source = reported``. Accuracies are in percent, F1 in [0, 1], as in the paper.

Single-label experiments (Tables II-IV): columns ``accuracy, macro_f1, linear_probe_accuracy``.
Multi-label experiments (4DME, Table V): ``f1_<class>`` and ``accuracy_<class>`` per class plus
``f1_average`` and ``accuracy_average`` (the paper's per-class F1 / accuracy of each binary
decision and their average over classes), and ``linear_probe_accuracy``.

Every row names its training signal: ``prompts`` (the prompts source, ``label`` or ``pseudo``),
``supervision`` (``model.supervision``: e.g. "class prompts (labels)", "cross-entropy on
labels + class prompts (labels)", "pseudo-label prompts (label-free)") and ``init`` (where the
vision encoder started: ``random``, or the pretrained vision.pt the folds loaded; an evaluation
JSON without ``init`` predates pretraining and started from scratch; ``, replay W`` when the
fine-tuning replayed the pretraining's corpus at weight W, smile_vlm.replay) with ``wise_alpha`` (the
WiSE-FT mixing weight the model was evaluated at, smile_vlm.wise; 1 = plain fine-tuning). Multi-label tables add
``decision``: the rule and logit scale that turned scores into label sets (evaluate.py).

An evaluation JSON may carry ``single_view: {view name: metrics}`` (the model fed one view
alone); each view then gets its own method ``"<variant> (<view> only)"`` beside the multi-view
rows, like the paper's left/right/front rows of Table V.

The markdown renderings of these tables (the summary page, the README's result blocks) are in
``smile_vlm.summary``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from smile_vlm.atomic import write_csv
from smile_vlm.errors import ScanError
from smile_vlm.settings import PLAIN_ALPHA, RANDOM_INIT, complete

# Metrics that a single-label evaluation JSON carries (fractions) and their table columns.
_SCALAR_METRICS = {
    "accuracy": ("accuracy", 100.0),
    "macro_f1": ("macro_f1", 1.0),
    "linear_probe_accuracy": ("linear_probe_accuracy", 100.0),
}
ID_COLUMNS = ["source", "method", "fold", "setting", "prompts", "supervision", "init", "wise_alpha", "decision", "n_test"]
_TEXT_COLUMNS = ("prompts", "supervision", "init", "wise_alpha", "decision")  # per-row facts a method's mean row keeps
REPORTED_MARK = "reported on the real dataset"


def paper_labels(kind: str) -> dict[str, str]:
    """``table_titles``, ``dataset_labels`` or ``ablation_variants`` of configs/labels.yaml, in
    the file's order: what tables and figures print for a config name (others print the name)."""
    return dict(_labels()[kind])


@functools.cache
def _labels() -> dict:
    return yaml.safe_load(resources.files("smile_vlm").joinpath("configs/labels.yaml").read_text())


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
                 "supervision": result.get("supervision"), "init": init_text(result),
                 "wise_alpha": f"{float(result.get('wise_alpha', PLAIN_ALPHA)):g}",
                 "decision": decision_text(result)}
        for method, order, metrics in entries:
            rows.append({"source": "ours", "method": method, "fold": str(result["k"]), **facts,
                         "n_test": metrics.get("n_test", result.get("n_test")),
                         "_variant_rank": rank, "_view_rank": order,
                         **metric_columns(metrics, multi_label, classes)})
    folds = pd.DataFrame(rows)
    folds.attrs.update(multi_label=multi_label, classes=classes)
    return folds


def init_text(result: dict) -> str:
    """Where the row's vision encoder started, and whether its fine-tuning replayed the pretraining."""
    init = result.get("init") or RANDOM_INIT
    replay = float(result.get("replay") or 0.0)
    return f"{init}, replay {replay:g}" if replay else init


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
    experiment = complete("experiment", experiment)
    prompts_source = experiment["prompts_source"]
    # Single-view rows only where the paper's table has them (Table V: left, right, front).
    folds = fold_rows(evals, prompts_source, view_rows=bool(experiment["view_rows"]))
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
    columns = [c for c in ID_COLUMNS if multi_label or c != "decision"]
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
    return [c for c in folds.columns if c not in ID_COLUMNS and not c.startswith("_")]


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
