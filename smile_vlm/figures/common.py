"""What every figure shares: sizes in inches at a fixed DPI, the evaluation JSONs, view labels,
and an atomic PNG write (matplotlib's object API with the Agg canvas: no pyplot, no global state).
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from smile_vlm import atomic
from smile_vlm.report import paper_labels, read_evaluation
from smile_vlm.views import view_name

DPI = 100
# Axis labels of the experiments (configs/labels.yaml); others print their name.
DATASET_LABELS = paper_labels("dataset_labels")


def load_evaluations(evals) -> list[dict]:
    """Evaluation results from JSON paths (or already loaded dicts, passed through)."""
    return [item if isinstance(item, dict) else {**read_evaluation(item), "_path": str(item)} for item in evals]


def view_label(view) -> str:
    """Axis label of a view: ``{"yaw": -30, "pitch": 0}`` -> ``yaw -30°``; names pass through."""
    return view_name(view, degrees=True)


def by_variant(results: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for result in results:
        groups.setdefault(str(result["variant"]), []).append(result)
    return groups


def new_figure(width_inches: float, height_inches: float) -> Figure:
    figure = Figure(figsize=(width_inches, height_inches), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, out_png) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic.write_bytes(out_png, buffer.getvalue())


def source_of(result: dict) -> str:
    return result.get("_path", f"evaluation of {result.get('variant')} fold {result.get('k')}")
