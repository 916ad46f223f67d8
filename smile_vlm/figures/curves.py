"""Training curves: every loss term per epoch, mean ± std over folds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from smile_vlm.errors import ScanError
from smile_vlm.figures.common import new_figure, save_png

LOSS_TITLES = {
    "mv_bt": "mv-bt (Eq. 1-4)",
    "vl_align": "vl-align (Eq. 6)",
    "red_min": "red-min (Eq. 8-9)",
    "total": "total (Eq. 10)",
}
# Numeric fields of a train_log.jsonl line that are bookkeeping, not loss terms.
LOG_BOOKKEEPING = {"epoch", "step", "lr", "samples_per_s", "loader_samples_per_s", "seconds"}


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
    figure = new_figure(*training_curves_size(len(terms)))
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
    save_png(figure, out_png)
