"""Per-identity variation of the procedural face's action-unit shapes (``pretrain.unit_shapes``).

The procedural AU fields (``face.FaceModel._au_field``) are hand-made Gaussian displacements, one
shape per AU for every face; a scanned face moves differently (another face model's brow raiser
peaks elsewhere, spreads wider and lifts more than it pushes forward). An encoder pretrained on one
shape per AU learns that shape. Like domain randomisation (Tobin et al., IROS 2017), this draws,
once per identity and AU, how the field departs from its template, so that what stays constant is
what the AU is: which region moves and roughly which way.

Each field is resampled under a warp that keeps the face's left-right symmetry: stretched across
the face about the midline and along it about the field's own centre (log-normal, ``sigma``),
moved up or down (normal, ``sigma`` x SHIFT_MM), and its x, y and z displacements scaled apart
(log-normal, ``sigma``). ``sigma`` 0 draws nothing and leaves the fields as they are.
"""

from __future__ import annotations

import numpy as np

SHIFT_MM = 10.0  # sigma 0.3 moves a field's centre by 3 mm (one standard deviation)


def bilinear(field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``field`` (R, C, 3) at fractional grid positions, zero outside the grid."""
    height, width = field.shape[:2]
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    out = np.zeros(rows.shape + (field.shape[2],))
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        out += np.where(inside[..., None], field[np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)], 0.0) * weight
    return out


def varied_field(field: np.ndarray, rng: np.random.Generator, sigma: float, mm_per_row: float) -> np.ndarray:
    """One AU field under one random symmetric warp and gain (the draws of the module docstring)."""
    stretch_x, stretch_y = np.exp(rng.normal(0.0, sigma, 2))
    shift_rows = rng.normal(0.0, sigma * SHIFT_MM) / mm_per_row
    gains = np.exp(rng.normal(0.0, sigma, 3))
    height, width = field.shape[:2]
    magnitude = np.linalg.norm(field, axis=-1).sum(axis=1)
    centre_row = float((magnitude * np.arange(height)).sum() / max(magnitude.sum(), 1e-12))
    midline = (width - 1) / 2.0
    rows, cols = np.meshgrid(np.arange(height, dtype=float), np.arange(width, dtype=float), indexing="ij")
    source_rows = centre_row + (rows - centre_row - shift_rows) / stretch_y
    source_cols = midline + (cols - midline) / stretch_x
    return bilinear(field, source_rows, source_cols) * gains


def vary_unit_fields(model, rng: np.random.Generator, sigma: float) -> None:
    """Replace ``model.au_basis`` (a procedural ``FaceModel``) by one varied field per AU."""
    if not sigma:
        return
    mm_per_row = float(np.mean(np.diff(model.y[:, model.cols // 2])))
    model.au_basis = {au: varied_field(field, rng, float(sigma), mm_per_row) for au, field in model.au_basis.items()}
