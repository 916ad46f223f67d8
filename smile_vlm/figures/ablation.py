"""Figures across experiments, from their table CSVs: the ablation of the losses (the paper's
Fig. 2) and the accuracy gains between configurations (Fig. 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.figures.common import DATASET_LABELS, new_figure, save_png
from smile_vlm.report import paper_labels

# The ablation variants in the order of the paper's Fig. 2, with their legend labels
# (configs/labels.yaml); the first is the full model the others are compared with.
ABLATION_VARIANTS = paper_labels("ablation_variants")
FULL_VARIANT = next(iter(ABLATION_VARIANTS))


# --------------------------------------------------------------------------- ablation (Fig. 2)

def accuracy_column(table: pd.DataFrame) -> str:
    """The headline accuracy of a table: ``accuracy``, or Table V's ``accuracy_average``."""
    for column in ("accuracy", "accuracy_average"):
        if column in table.columns:
            return column
    raise KeyError("table has no accuracy column")


def accuracies_from_tables(table_csvs, variants=None) -> dict[str, dict[str, list[float]]]:
    """``{dataset: {variant: [fold accuracies %]}}`` from experiment tables (dataset = file stem).

    Only our per-fold rows of the given variants (default: the ablation variants) are kept.
    """
    variants = list(variants or ABLATION_VARIANTS)
    accuracies = {}
    for path in map(Path, table_csvs):
        table = pd.read_csv(path, dtype={"fold": str, "method": str})
        if "source" not in table.columns:
            raise ScanError(path, "not an experiment table (no source column)")
        column = accuracy_column(table)
        folds = table[(table.source == "ours") & table.fold.str.isdigit() & table.method.isin(variants)]
        found = {method: group[column].dropna().astype(float).tolist()
                 for method, group in folds.groupby("method", sort=False)}
        if found:
            accuracies[path.stem] = {v: found[v] for v in variants if v in found}
    return accuracies


def ablation_table(accuracies: dict[str, dict[str, list[float]]], full: str = FULL_VARIANT) -> pd.DataFrame:
    """``dataset, variant, label, accuracy_mean, accuracy_std, n_folds, delta_vs_full`` (pp)."""
    rows = []
    for dataset, by_variant in accuracies.items():
        full_mean = float(np.mean(by_variant[full])) if by_variant.get(full) else np.nan
        for variant in _variant_order(by_variant):
            values = np.asarray(by_variant[variant], dtype=np.float64)
            mean = float(values.mean()) if values.size else np.nan
            rows.append({"dataset": dataset, "variant": variant, "label": ABLATION_VARIANTS.get(variant, variant),
                         "accuracy_mean": mean,
                         "accuracy_std": float(values.std(ddof=1)) if values.size > 1 else np.nan,
                         "n_folds": int(values.size), "delta_vs_full": mean - full_mean})
    return pd.DataFrame(rows, columns=["dataset", "variant", "label", "accuracy_mean", "accuracy_std",
                                       "n_folds", "delta_vs_full"])


def _variant_order(by_variant: dict) -> list[str]:
    known = [v for v in ABLATION_VARIANTS if v in by_variant]
    return known + [v for v in by_variant if v not in ABLATION_VARIANTS]


def ablation_size(n_datasets: int) -> tuple[float, float]:
    # 7 inches hold the title and the one-row legend of four variants
    return max(7.0, 2.5 + 1.8 * n_datasets), 4.5


def ablation_figure(accuracies: dict[str, dict[str, list[float]]], out_png, full: str = FULL_VARIANT) -> pd.DataFrame:
    """Fig. 2: grouped bars (one group per dataset, one bar per variant), std error bars."""
    table = ablation_table(accuracies, full)
    datasets = list(dict.fromkeys(table["dataset"]))
    variants = _variant_order({variant: None for by_variant in accuracies.values() for variant in by_variant})
    figure = new_figure(*ablation_size(len(datasets)))
    ax = figure.subplots()
    width = 0.8 / len(variants)
    for v, variant in enumerate(variants):
        part = table[table.variant == variant].set_index("dataset").reindex(datasets)
        x = np.arange(len(datasets)) + (v - (len(variants) - 1) / 2) * width
        bars = ax.bar(x, part["accuracy_mean"], width, yerr=part["accuracy_std"].fillna(0.0), capsize=3,
                      color=f"C{v}", label=ABLATION_VARIANTS.get(variant, variant))
        ax.bar_label(bars, labels=["" if np.isnan(m) else f"{m:.1f}" for m in part["accuracy_mean"]],
                     fontsize=7, padding=2)
    top = table["accuracy_mean"] + table["accuracy_std"].fillna(0.0)
    ax.set_ylim(0, min(105.0, float(np.nanmax(top)) * 1.15 + 1) if top.notna().any() else 100.0)
    ax.set_xticks(range(len(datasets)), [DATASET_LABELS.get(d, d) for d in datasets], rotation=15)
    ax.set_xlabel("dataset (experiment)")
    ax.set_ylabel("zero-shot accuracy (%)")
    fold_counts = sorted(set(table["n_folds"]))
    over = f"{fold_counts[0]} folds" if len(fold_counts) == 1 else "folds"
    ax.set_title(f"Ablation of the SMILE-VLM losses (mean ± std over {over})")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=min(len(variants), 4),
                  fontsize=8)  # outside the axes: tall bars never hide under it
    save_png(figure, out_png)
    return table


def ablation_from_tables(table_csvs, out_png, out_csv=None, full: str = FULL_VARIANT) -> pd.DataFrame:
    """CLI wrapper: experiment tables in, Fig. 2 PNG (and ablation.csv) out."""
    accuracies = accuracies_from_tables(table_csvs)
    if not accuracies:
        raise ValueError(f"no ablation variant ({', '.join(ABLATION_VARIANTS)}) in the tables")
    table = ablation_figure(accuracies, out_png, full)
    if out_csv is not None:
        atomic.write_csv(out_csv, table.round(4))
    return table


# --------------------------------------------------------------------------- gains heatmap (Fig. 3)

def accuracy_matrix(table_csvs) -> pd.DataFrame:
    """Mean accuracy (%) of each configuration (our methods) by dataset (table stem)."""
    columns = {}
    for path in map(Path, table_csvs):
        table = pd.read_csv(path, dtype={"fold": str, "method": str})
        means = table[(table.source == "ours") & (table.fold == "mean")]
        columns[path.stem] = means.set_index("method")[accuracy_column(table)].astype(float)
    return pd.DataFrame(columns)


def gain_matrix(accuracy: pd.DataFrame, pairs=None, reference: str = FULL_VARIANT) -> pd.DataFrame:
    """Rows ``"A vs B"`` = accuracy[A] - accuracy[B] (pp) for each dataset column.

    ``pairs`` defaults to the reference configuration against every other one (ablations first,
    in the paper's order; then e.g. other models or single-view rows).
    """
    if pairs is None:
        if reference not in accuracy.index:
            raise KeyError(f"reference configuration {reference!r} not in {list(accuracy.index)}")
        others = _variant_order({name: None for name in accuracy.index if name != reference})
        pairs = [(reference, other) for other in others]
    rows = {}
    for first, second in pairs:
        label = f"{ABLATION_VARIANTS.get(first, first)} vs {ABLATION_VARIANTS.get(second, second)}"
        rows[label] = accuracy.loc[first] - accuracy.loc[second]
    return pd.DataFrame(rows).T.reindex(columns=accuracy.columns)


def gains_size(n_rows: int, n_columns: int) -> tuple[float, float]:
    return 4.5 + 1.4 * n_columns, 1.6 + 0.55 * n_rows


def gains_heatmap(accuracy: pd.DataFrame, out_png, pairs=None, reference: str = FULL_VARIANT) -> pd.DataFrame:
    """Fig. 3: annotated accuracy gains (pp); Blues when all gains are >= 0, else red-blue around 0."""
    gains = gain_matrix(accuracy, pairs, reference)
    values = gains.to_numpy(dtype=np.float64)
    figure = new_figure(*gains_size(*values.shape))
    ax = figure.subplots()
    finite = values[np.isfinite(values)]
    diverging = bool(finite.size and finite.min() < 0)  # a loss somewhere: red below 0, blue above
    if diverging:
        bound = float(np.abs(finite).max())
        image = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0.0, -bound, bound), aspect="auto")
    else:
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=top, aspect="auto")
    for i, j in np.ndindex(values.shape):
        value = values[i, j]
        shade = float(image.norm(value)) if np.isfinite(value) else 0.0
        dark = abs(shade - 0.5) > 0.3 if diverging else shade > 0.6  # white text on dark cells
        ax.text(j, i, "n/a" if not np.isfinite(value) else f"{value:+.2f}", ha="center", va="center",
                fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(gains.shape[1]), [DATASET_LABELS.get(c, c) for c in gains.columns], rotation=20, ha="right")
    ax.set_yticks(range(gains.shape[0]), gains.index)
    ax.set_xlabel("dataset (experiment)")
    ax.set_ylabel("configurations compared")
    ax.set_title("Accuracy gain between\nconfigurations (pp)")
    figure.colorbar(image, ax=ax, label="accuracy gain (pp)")
    save_png(figure, out_png)
    return gains


def gains_heatmap_from_tables(table_csvs, out_png, pairs=None, reference: str = FULL_VARIANT) -> pd.DataFrame:
    """CLI wrapper: experiment tables in (mean rows), Fig. 3 PNG out."""
    return gains_heatmap(accuracy_matrix(table_csvs), out_png, pairs, reference)
