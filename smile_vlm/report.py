"""Tables: one per experiment, from the per-fold evaluation JSONs.

A table has our rows (one per variant and fold, then one ``mean`` row per variant with the
standard deviation over folds) followed by the rows the paper reports on the real dataset,
marked ``source = reported``. Accuracies are in percent, F1 in [0, 1], as in the paper.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from smile_vlm.atomic import write_csv

# Metrics that a single-label evaluation JSON carries (fractions) and their table columns.
_SCALAR_METRICS = {
    "accuracy": ("accuracy", 100.0),
    "macro_f1": ("macro_f1", 1.0),
    "linear_probe_accuracy": ("linear_probe_accuracy", 100.0),
}


def reported_rows(name: str) -> list[dict]:
    """The paper's rows for a table (empty when the paper has none for it)."""
    text = resources.files("smile_vlm").joinpath("configs/reported.yaml").read_text()
    return yaml.safe_load(text).get(name, [])


def fold_rows(evals: list[str | Path], prompts_source: str) -> pd.DataFrame:
    rows = []
    for path in evals:
        result = json.loads(Path(path).read_text())
        row = {
            "source": "ours",
            "method": result["variant"],
            "fold": str(result["k"]),
            "prompts": prompts_source,
            "n_test": result.get("n_test"),
        }
        for key, (column, scale) in _SCALAR_METRICS.items():
            if result.get(key) is not None:
                row[column] = float(result[key]) * scale
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """One ``mean`` row per method, with ``<metric>_std`` over its folds (ddof=1)."""
    metrics = [c for c, _ in _SCALAR_METRICS.values() if c in folds]
    summary = []
    for method, group in folds.groupby("method", sort=False):
        row = {"source": "ours", "method": method, "fold": "mean", "prompts": group["prompts"].iloc[0],
               "n_test": group["n_test"].sum()}
        for metric in metrics:
            values = group[metric].dropna().to_numpy(dtype=float)
            row[metric] = float(values.mean()) if len(values) else np.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        summary.append(row)
    return pd.DataFrame(summary)


def build_table(experiment: dict, evals: list[str | Path]) -> pd.DataFrame:
    prompts_source = experiment.get("prompts_source", "label")
    folds = fold_rows(evals, prompts_source)
    folds = folds.sort_values(["method", "fold"], key=_fold_sort_key, kind="stable")
    reported = pd.DataFrame(
        [{"source": "reported", "method": r["method"], "setting": r.get("setting"),
          "accuracy": r.get("accuracy") if not isinstance(r.get("accuracy"), dict) else None}
         for r in reported_rows(experiment.get("reported", experiment["name"]))]
    )
    table = pd.concat([folds, summarize(folds), reported], ignore_index=True)
    columns = ["source", "method", "fold", "setting", "prompts", "n_test"]
    for metric, _ in _SCALAR_METRICS.values():
        columns += [metric, f"{metric}_std"]
    return table.reindex(columns=[c for c in columns if c in table.columns])


def write_table(experiment: dict, evals: list[str | Path], out: str | Path) -> pd.DataFrame:
    table = build_table(experiment, evals)
    write_csv(out, table.round(4))
    return table


def _fold_sort_key(column: pd.Series) -> pd.Series:
    if column.name == "fold":
        return column.map(lambda f: int(f) if str(f).isdigit() else 10**9)
    return column
