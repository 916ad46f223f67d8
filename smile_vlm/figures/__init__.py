"""Figures of the paper and of our runs, drawn with matplotlib's object API (Agg, no pyplot).

Each figure has a pure helper that prepares its numbers (tested) and a drawing function that
takes plain data (evaluation JSON paths, training logs, table CSVs or DataFrames, a store) and
writes one PNG atomically. ``make_figure(kind, inputs, out)`` is the one entry point for the CLI.
One module per family:

- ``evaluation``: ``confusion_figure``, confusion matrices summed over folds, row-normalised (%),
  per variant; ``view_weights_figure``, the learned fusion weight of each view (Eq. 7) per class.
- ``curves``: ``training_curves_figure``, every loss term per epoch, mean ± std over folds.
- ``ablation``: ``ablation_figure`` / ``ablation_table``, Fig. 2, accuracy without each loss, per
  dataset; ``gains_heatmap``, Fig. 3, accuracy differences between configurations across datasets.
- ``sheet``: ``contact_sheet``, a few renders of every class from a packed store.
- ``common``: sizes, evaluation loading, view labels, the atomic PNG write.

Sizes are fixed in inches at ``DPI`` (no tight bounding box), so a figure's pixel size only
depends on its content's shape: see the ``*_size`` helpers.
"""

from __future__ import annotations

from smile_vlm.figures.ablation import (ABLATION_VARIANTS, FULL_VARIANT, ablation_figure, ablation_from_tables,
                                        ablation_table, gains_heatmap, gains_heatmap_from_tables)
from smile_vlm.figures.curves import training_curves_figure
from smile_vlm.figures.evaluation import confusion_figure, view_weights_figure
from smile_vlm.figures.sheet import contact_sheet, sheet_size_pixels

__all__ = ["ABLATION_VARIANTS", "FIGURE_KINDS", "FULL_VARIANT", "ablation_figure", "ablation_from_tables",
           "ablation_table", "confusion_figure", "contact_sheet", "gains_heatmap", "gains_heatmap_from_tables",
           "make_figure", "sheet_size_pixels", "training_curves_figure", "view_weights_figure"]

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
