"""Figures of one experiment's evaluations: confusion matrices and the learned view weights."""

from __future__ import annotations

import numpy as np
import pandas as pd

from smile_vlm.errors import ScanError
from smile_vlm.figures.common import by_variant, load_evaluations, new_figure, save_png, source_of, view_label


# --------------------------------------------------------------------------- confusion matrices

def summed_confusion(results: list[dict]) -> tuple[list[str], np.ndarray]:
    """Class names and (K, K) counts summed over folds (rows = true, columns = predicted)."""
    classes, total = None, None
    for result in results:
        confusion = result.get("confusion")
        if not confusion:
            reason = ("multi-label evaluation has no confusion matrix" if result.get("multi_label")
                      else "evaluation has no confusion matrix")
            raise ScanError(source_of(result), reason)
        matrix = np.asarray(confusion["matrix"], dtype=np.int64)
        if classes is None:
            classes, total = list(confusion["classes"]), np.zeros_like(matrix)
        elif list(confusion["classes"]) != classes:
            raise ScanError(source_of(result), f"classes {confusion['classes']} differ from the other folds' {classes}")
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
    groups = by_variant(load_evaluations(evals))
    prepared = {variant: summed_confusion(results) for variant, results in groups.items()}
    n_classes = max(len(classes) for classes, _ in prepared.values())
    figure = new_figure(*confusion_size(n_classes, len(prepared)))
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
    save_png(figure, out_png)


# --------------------------------------------------------------------------- view weights

def view_weight_frame(results: list[dict]) -> pd.DataFrame:
    """Long table ``variant, fold, class, view, weight`` of the per-class mean fusion weights."""
    rows = []
    for result in results:
        views = [view_label(v) for v in result.get("views") or []]
        for name, weights in (result.get("view_weights") or {}).items():
            if views and len(weights) != len(views):
                raise ScanError(source_of(result),
                                f"class {name} has {len(weights)} view weights for {len(views)} views")
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
    figure = new_figure(*view_weights_size(len(classes), len(variants)))
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
    save_png(figure, out_png)
