"""The contact sheet of a packed store: a few samples of every class, all their views side by side.

A look at what the models will see (results/<dataset>/figures/contact_sheet.png), drawn from the
store alone.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from smile_vlm import atomic
from smile_vlm.figures.common import view_label
from smile_vlm.store import open_store

SHEET_DPI = 100
SHEET_CELL_INCHES = 1.6  # one view image
SHEET_LABEL_INCHES = 1.2  # left band for the class names
SHEET_TITLE_INCHES = 0.8  # top band for the title and view angles


def sheet_size_pixels(n_classes: int, per_class: int, n_views: int) -> tuple[int, int]:
    """(width, height) in pixels of the contact sheet for this grid."""
    width = SHEET_LABEL_INCHES + per_class * n_views * SHEET_CELL_INCHES
    height = SHEET_TITLE_INCHES + n_classes * SHEET_CELL_INCHES
    return round(width * SHEET_DPI), round(height * SHEET_DPI)


def contact_sheet(store_path: str | Path, out_png: str | Path, per_class: int = 3, seed: int = 0) -> None:
    """A grid PNG: one row per class, ``per_class`` random samples of it, all views side by side."""
    root = open_store(store_path)
    attrs = root.attrs.asdict()
    classes, views = attrs["classes"], attrs["views"]
    members = root["labels"][:].astype(bool) if attrs["multi_label"] else \
        root["label"][:][:, None] == np.arange(len(classes))[None, :]
    sample_ids = root["sample_id"][:].tolist()
    rng = np.random.default_rng(seed)

    width, height = sheet_size_pixels(len(classes), per_class, len(views))
    figure = Figure(figsize=(width / SHEET_DPI, height / SHEET_DPI), dpi=SHEET_DPI)
    grid = figure.add_gridspec(
        len(classes), per_class * len(views), wspace=0.04, hspace=0.25,
        left=SHEET_LABEL_INCHES * SHEET_DPI / width, right=0.995,
        top=1 - SHEET_TITLE_INCHES * SHEET_DPI / height, bottom=0.02)
    kind = f" ({attrs['kind']})" if attrs.get("kind") else ""
    figure.suptitle(f"{attrs['dataset']}: {attrs['n_samples']} samples{kind}, "
                    f"{per_class} per class, seed {seed}", fontsize=12, y=1 - 0.15 / (height / SHEET_DPI))

    for class_row, name in enumerate(classes):
        candidates = np.flatnonzero(members[:, class_row])
        chosen = np.sort(rng.choice(candidates, size=min(per_class, candidates.size), replace=False))
        for slot in range(per_class):
            for view, angles in enumerate(views):
                axis = figure.add_subplot(grid[class_row, slot * len(views) + view])
                axis.set_xticks([])
                axis.set_yticks([])
                if class_row == 0:
                    axis.set_title(view_label(angles), fontsize=7)
                if slot == 0 and view == 0:
                    axis.set_ylabel(f"{name}\nn={candidates.size}", fontsize=10, rotation=0,
                                    ha="right", va="center", labelpad=8)
                if slot >= chosen.size:
                    axis.set_frame_on(False)
                    if slot == 0 and view == 0:
                        axis.text(0.0, 0.5, "no samples", transform=axis.transAxes, fontsize=9)
                    continue
                row = int(chosen[slot])
                axis.imshow(root["images"][row, view], interpolation="antialiased")
                if view == 0:
                    axis.set_xlabel(sample_ids[row], fontsize=6, loc="left")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=SHEET_DPI, facecolor="white")
    atomic.write_bytes(out_png, buffer.getvalue())
