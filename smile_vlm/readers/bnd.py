"""BU-3DFE ``_F3D.bnd`` / BU-4DFE ``BU4DFE_BND_V1.1`` landmark reader (docs/datasets.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.readers import check_values, read_limited


def read_bnd(path: str | Path, n_expected: int = 83, *, max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``<vertex_index> <x> <y> <z>`` -> (indices int64 (n,), xyz float32 (n, 3)).

    Separators are single spaces or double tabs and some files end with a blank line, so rows
    are ``split()`` and blank lines skipped. The index is 0-based into that scan's own mesh.
    """
    path = Path(path)
    text = read_limited(path, max_bytes).decode("utf-8", errors="replace")
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if len(rows) != n_expected:
        raise ScanError(path, f"{len(rows)} landmark rows, expected {n_expected}")
    for number, row in enumerate(rows, start=1):
        if len(row) != 4:
            raise ScanError(path, f"row {number} has {len(row)} fields, expected 'index x y z'")
    try:
        indices = np.array([row[0] for row in rows], dtype=np.int64)
        xyz = np.array([row[1:] for row in rows], dtype=np.float64)
    except ValueError:
        raise ScanError(path, "non-numeric landmark row") from None
    if (indices < 0).any():
        raise ScanError(path, "negative vertex index")
    check_values(xyz, path, "landmark coordinates")
    return indices, xyz.astype(np.float32)
