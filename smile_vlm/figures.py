"""Figures of the paper and of our runs, drawn with matplotlib's object API (Agg, no pyplot).

Each figure has a pure helper that prepares its numbers (tested) and a drawing function that
takes plain data (evaluation JSON paths, training logs, table CSVs or DataFrames) and writes one
PNG atomically. ``make_figure(kind, inputs, out)`` is the one entry point for the CLI.

- ``confusion_figure``: confusion matrices summed over folds, row-normalised (%), per variant.
- ``view_weights_figure``: the learned fusion weight of each view (Eq. 7) per class, over folds.
- ``training_curves_figure``: every loss term per epoch, mean ± std over folds.
- ``ablation_figure`` / ``ablation_table``: Fig. 2, accuracy without each loss, per dataset.
- ``gains_heatmap``: Fig. 3, accuracy differences between configurations across datasets.

Sizes are fixed in inches at ``DPI`` (no tight bounding box), so a figure's pixel size only
depends on its content's shape: see the ``*_size`` helpers.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.report import read_evaluation

DPI = 100
# Ablation variants of config.yaml in the order of the paper's Fig. 2, with their legend labels.
ABLATION_VARIANTS = {
    "smile_vlm": "SMILE-VLM (full)",
    "smile_vlm_no_red_min": "w/o red-min",
    "smile_vlm_no_vl_align": "w/o vl-align",
    "smile_vlm_no_mv_bt": "w/o mv-bt",
}
FULL_VARIANT = "smile_vlm"
DATASET_LABELS = {
    "bu3dfe_subset1": "BU-3DFE (Subset I)",
    "bu3dfe_subset2": "BU-3DFE (Subset II)",
    "bosphorus": "Bosphorus",
    "bu4dfe": "BU-4DFE",
    "bp4d": "BP4D (recognition)",
    "bp4d_cross": "BP4D (cross-dataset)",
    "4dme": "4DME",
}
LOSS_TITLES = {
    "mv_bt": "mv-bt (Eq. 1-4)",
    "vl_align": "vl-align (Eq. 6)",
    "red_min": "red-min (Eq. 8-9)",
    "total": "total (Eq. 10)",
}
# Numeric fields of a train_log.jsonl line that are bookkeeping, not loss terms.
LOG_BOOKKEEPING = {"epoch", "step", "lr", "samples_per_s", "loader_samples_per_s", "seconds"}


# --------------------------------------------------------------------------- shared helpers

def load_evaluations(evals) -> list[dict]:
    """Evaluation results from JSON paths (or already loaded dicts, passed through)."""
    return [item if isinstance(item, dict) else {**read_evaluation(item), "_path": str(item)} for item in evals]


def view_label(view) -> str:
    """Axis label of a view: ``{"yaw": -30, "pitch": 0}`` -> ``yaw -30°``; names pass through.

    Signed like evaluate.view_names ("yaw +30"), which names the tables' single-view rows.
    """
    if isinstance(view, dict):
        label = f"yaw {float(view.get('yaw', 0)):+g}°"
        if float(view.get("pitch", 0)):
            label += f", pitch {float(view['pitch']):+g}°"
        return label
    return str(view)


def _by_variant(results: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for result in results:
        groups.setdefault(str(result["variant"]), []).append(result)
    return groups


def _new_figure(width_inches: float, height_inches: float) -> Figure:
    figure = Figure(figsize=(width_inches, height_inches), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out_png) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic.write_bytes(out_png, buffer.getvalue())


def _source(result: dict) -> str:
    return result.get("_path", f"evaluation of {result.get('variant')} fold {result.get('k')}")


# --------------------------------------------------------------------------- confusion matrices

def summed_confusion(results: list[dict]) -> tuple[list[str], np.ndarray]:
    """Class names and (K, K) counts summed over folds (rows = true, columns = predicted)."""
    classes, total = None, None
    for result in results:
        confusion = result.get("confusion")
        if not confusion:
            reason = ("multi-label evaluation has no confusion matrix" if result.get("multi_label")
                      else "evaluation has no confusion matrix")
            raise ScanError(_source(result), reason)
        matrix = np.asarray(confusion["matrix"], dtype=np.int64)
        if classes is None:
            classes, total = list(confusion["classes"]), np.zeros_like(matrix)
        elif list(confusion["classes"]) != classes:
            raise ScanError(_source(result), f"classes {confusion['classes']} differ from the other folds' {classes}")
        total = total + matrix
    if classes is None:
        raise ValueError("no evaluations given")
    return classes, total


def row_percent(counts: np.ndarray) -> np.ndarray:
    """Each row as % of its true class; NaN rows for a class with no test sample."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * counts / totals, np.nan)


def confusion_size(n_classes: int, n_panels: int = 1) -> tuple[float, float]:
    cell = 0.75
    return n_panels * (2.6 + cell * n_classes), 2.0 + cell * n_classes


def confusion_figure(evals, out_png) -> None:
    """One panel per variant: the confusion summed over its folds, row-normalised %, annotated."""
    groups = _by_variant(load_evaluations(evals))
    prepared = {variant: summed_confusion(results) for variant, results in groups.items()}
    n_classes = max(len(classes) for classes, _ in prepared.values())
    figure = _new_figure(*confusion_size(n_classes, len(prepared)))
    axes = np.atleast_1d(figure.subplots(1, len(prepared), squeeze=False)[0])
    for ax, (variant, (classes, counts)) in zip(axes, prepared.items()):
        percent = row_percent(counts)
        image = ax.imshow(np.nan_to_num(percent, nan=0.0), cmap="Blues", vmin=0.0, vmax=100.0)
        for i, j in np.ndindex(percent.shape):
            text = "n/a" if np.isnan(percent[i, j]) else f"{percent[i, j]:.1f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if percent[i, j] > 55 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
        ax.set_yticks(range(len(classes)), [f"{c} (n={int(n)})" for c, n in zip(classes, counts.sum(axis=1))])
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class (test samples)")
        n_folds = len(groups[variant])
        ax.set_title(f"{variant}: summed over {n_folds} fold{'s' * (n_folds != 1)}\n"
                     f"accuracy {100 * np.trace(counts) / max(counts.sum(), 1):.1f}%", fontsize=10)
        figure.colorbar(image, ax=ax, shrink=0.8, label="% of the true class")
    figure.suptitle("Zero-shot confusion matrix (row-normalised %)")
    _save(figure, out_png)


# --------------------------------------------------------------------------- view weights

def view_weight_frame(results: list[dict]) -> pd.DataFrame:
    """Long table ``variant, fold, class, view, weight`` of the per-class mean fusion weights."""
    rows = []
    for result in results:
        views = [view_label(v) for v in result.get("views") or []]
        for name, weights in (result.get("view_weights") or {}).items():
            if views and len(weights) != len(views):
                raise ScanError(_source(result), f"class {name} has {len(weights)} view weights for {len(views)} views")
            labels = views or [f"view {i}" for i in range(len(weights))]
            for view, weight in zip(labels, weights):
                if weight is not None:
                    rows.append({"variant": str(result["variant"]), "fold": int(result["k"]), "class": name,
                                 "view": view, "weight": float(weight)})
    if not rows:
        raise ValueError("no view weights in the evaluations")
    return pd.DataFrame(rows)


def view_weight_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; 0 with one fold) and fold count per (variant, class, view)."""
    grouped = frame.groupby(["variant", "class", "view"], sort=False)["weight"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    summary["std"] = summary["std"].fillna(0.0)
    return summary


def view_weights_size(n_classes: int, n_panels: int = 1) -> tuple[float, float]:
    return 3.0 + 1.1 * n_classes, 1.0 + 3.2 * n_panels


def view_weights_figure(evals, out_png) -> None:
    """Per class, the mean fusion weight of each view with its spread over folds (one panel per variant).

    Variants whose fusion weights are not learned (FACET-VLM's CVSA pools with a plain mean; their
    evaluations hold ``view_weights: null``) get no panel; the title names them.
    """
    results = load_evaluations(evals)
    frame = view_weight_frame(results)
    fixed = list(dict.fromkeys(str(r["variant"]) for r in results if r.get("view_weights") is None))
    summary = view_weight_summary(frame)
    variants = list(dict.fromkeys(frame["variant"]))
    classes = list(dict.fromkeys(frame["class"]))
    views = list(dict.fromkeys(frame["view"]))
    figure = _new_figure(*view_weights_size(len(classes), len(variants)))
    axes = figure.subplots(len(variants), 1, squeeze=False)[:, 0]
    width = 0.8 / len(views)
    colors = [f"C{i}" for i in range(len(views))]
    for ax, variant in zip(axes, variants):
        for v, (view, color) in enumerate(zip(views, colors)):
            offset = (v - (len(views) - 1) / 2) * width
            part = summary[(summary.variant == variant) & (summary.view == view)].set_index("class").reindex(classes)
            x = np.arange(len(classes)) + offset
            ax.bar(x, part["mean"], width, yerr=part["std"], capsize=3, color=color, alpha=0.8, label=view)
            points = frame[(frame.variant == variant) & (frame.view == view)]
            ax.scatter(np.array([classes.index(c) for c in points["class"]]) + offset, points["weight"],
                       s=8, color="black", zorder=3, linewidths=0)
        ax.axhline(1.0 / len(views), color="grey", linestyle="--", linewidth=1, label="uniform 1/V")
        n_folds = frame.loc[frame.variant == variant, "fold"].nunique()
        ax.set_title(f"{variant}: mean ± std over {n_folds} fold{'s' * (n_folds != 1)} (dots: folds)", fontsize=10)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_xlabel("class (test samples of the class)")
        ax.set_ylabel("fusion weight (Eq. 7, sums to 1)")
        ax.legend(title="view", fontsize=8, loc="upper right", ncols=len(views) + 1)
        mine = summary[summary.variant == variant]
        # headroom above the tallest bar for the legend; weights are fractions of 1
        ax.set_ylim(0, min(1.05, max(2.0 / len(views), float((mine["mean"] + mine["std"]).max()) * 1.35)))
    title = "Learned view weights per class"
    if fixed:
        title += f"\n(no learned view weights, not shown: {', '.join(fixed)})"
    figure.suptitle(title)
    _save(figure, out_png)


# --------------------------------------------------------------------------- training curves

def read_train_log(path) -> pd.DataFrame:
    """The per-epoch lines of a train_log.jsonl (``kind == "epoch"``)."""
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ScanError(path, f"unreadable training log ({error})") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ScanError(path, f"line {number} is not JSON ({error})") from error
        if record.get("kind", "epoch") == "epoch":
            records.append(record)
    if not records:
        raise ScanError(path, "no epoch lines in the training log")
    return pd.DataFrame(records)


def loss_terms(log: pd.DataFrame) -> list[str]:
    return [c for c in log.columns if c not in LOG_BOOKKEEPING and c != "kind"
            and pd.api.types.is_numeric_dtype(log[c])]


def loss_curve_frame(train_logs) -> pd.DataFrame:
    """``term, epoch, mean, std, n`` over the logs (one per fold); std 0 with one fold."""
    frames = []
    for fold, path in enumerate(train_logs):
        log = read_train_log(path)
        terms = loss_terms(log)
        long = log.melt(id_vars=["epoch"], value_vars=terms, var_name="term", value_name="value")
        frames.append(long.assign(fold=fold))
    if not frames:
        raise ValueError("no training logs given")
    values = pd.concat(frames, ignore_index=True).dropna(subset=["value"])
    curves = values.groupby(["term", "epoch"], sort=False)["value"].agg(mean="mean", std="std", n="count")
    curves = curves.reset_index()
    curves["std"] = curves["std"].fillna(0.0)
    return curves.sort_values(["term", "epoch"], key=lambda c: c.map(_term_rank) if c.name == "term" else c,
                              kind="stable").reset_index(drop=True)


def _term_rank(term: str) -> int:
    order = list(LOSS_TITLES)
    return order.index(term) if term in order else len(order)


def use_log_scale(values) -> bool:
    """Log y when every value is positive and they span at least a factor of 10."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return bool(values.size and values.min() > 0 and values.max() / values.min() >= 10)


def curve_grid(n_terms: int) -> tuple[int, int]:
    """(rows, columns) of the loss panels: at most 3 across, 2 x 2 for the four SMILE-VLM terms."""
    columns = 2 if n_terms == 4 else min(n_terms, 3)
    return math.ceil(n_terms / columns), columns


def training_curves_size(n_terms: int) -> tuple[float, float]:
    rows, columns = curve_grid(n_terms)
    return 0.5 + 3.6 * columns, 0.6 + 2.8 * rows


def training_curves_figure(train_logs, out_png) -> None:
    """One panel per loss term: the per-epoch mean over folds with a ± std band."""
    curves = loss_curve_frame(train_logs)
    terms = list(dict.fromkeys(curves["term"]))
    figure = _new_figure(*training_curves_size(len(terms)))
    axes = figure.subplots(*curve_grid(len(terms)), squeeze=False).ravel()
    for ax, term in zip(axes, terms):
        part = curves[curves.term == term]
        epochs = part["epoch"].to_numpy() + 1  # logs count epochs from 0
        low, high = part["mean"] - part["std"], part["mean"] + part["std"]
        ax.plot(epochs, part["mean"], color="C0", marker="o", markersize=3,
                label=f"mean over {int(part['n'].max())} fold(s)")
        ax.fill_between(epochs, low, high, color="C0", alpha=0.25, linewidth=0, label="± std")
        if use_log_scale(np.concatenate([part["mean"], low[low > 0]])):
            ax.set_yscale("log")
        ax.set_title(LOSS_TITLES.get(term, term), fontsize=10)
        ax.set_xlabel("epoch (1 = first)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss (mean over the epoch's batches)")
        ax.legend(fontsize=7)
    for ax in axes[len(terms):]:
        ax.set_axis_off()
    figure.suptitle("Training losses per epoch")
    _save(figure, out_png)


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
    figure = _new_figure(*ablation_size(len(datasets)))
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
    _save(figure, out_png)
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
    figure = _new_figure(*gains_size(*values.shape))
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
    _save(figure, out_png)
    return gains


def gains_heatmap_from_tables(table_csvs, out_png, pairs=None, reference: str = FULL_VARIANT) -> pd.DataFrame:
    """CLI wrapper: experiment tables in (mean rows), Fig. 3 PNG out."""
    return gains_heatmap(accuracy_matrix(table_csvs), out_png, pairs, reference)


# --------------------------------------------------------------------------- CLI entry point

FIGURE_KINDS = ("confusion", "view-weights", "training-curves", "ablation", "gains")


def make_figure(kind: str, inputs: list, out_png, table_out=None, reference: str = FULL_VARIANT) -> None:
    """``smile-vlm figure <kind> --inputs ... --out <png> [--table-out <csv>]``.

    Inputs by kind: ``confusion`` and ``view-weights``: evaluation JSONs; ``training-curves``:
    train_log.jsonl files (one per fold); ``ablation`` and ``gains``: experiment table CSVs.
    ``table_out`` (ablation only): where to write ablation.csv.
    """
    if kind == "confusion":
        confusion_figure(inputs, out_png)
    elif kind == "view-weights":
        view_weights_figure(inputs, out_png)
    elif kind == "training-curves":
        training_curves_figure(inputs, out_png)
    elif kind == "ablation":
        ablation_from_tables(inputs, out_png, table_out, reference)
    elif kind == "gains":
        gains_heatmap_from_tables(inputs, out_png, reference=reference)
    else:
        raise ValueError(f"unknown figure kind {kind!r} (known: {', '.join(FIGURE_KINDS)})")
