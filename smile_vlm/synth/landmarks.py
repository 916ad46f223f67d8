"""Where the landmark files' points sit on the procedural face: rest (x, y) anchors of the
BU-3DFE/BU-4DFE 83 points and the 22 Bosphorus points, snapped to the nearest vertex."""

from __future__ import annotations

import numpy as np

from smile_vlm.synth.identity import Identity


def nearest(points_xy: np.ndarray, anchors_xy: np.ndarray) -> np.ndarray:
    """Index of the point nearest to each anchor."""
    d = ((anchors_xy[:, None, :] - points_xy[None, :, :]) ** 2).sum(-1)
    return d.argmin(axis=1).astype(np.int64)


def bu83_anchors(f: dict, ident: Identity) -> np.ndarray:
    """Rest (x, y) of the 83 BU points in the §1.5 order; the first eye/brow has negative x."""
    ex, ey, by = f["eye_x"], f["eye_y"], f["brow_y"]
    mx, my = f["mouth_x"], f["mouth_y"] + 0.0
    points: list[tuple[float, float]] = []
    for s in (-1, 1):  # 1-8 first eye, 9-16 second eye: inner, upper lid x3, outer, lower lid x3
        points += [(s * (ex - 14), ey), (s * (ex - 7), ey + 4), (s * ex, ey + 5), (s * (ex + 7), ey + 4),
                   (s * (ex + 14), ey), (s * (ex + 7), ey - 4), (s * ex, ey - 5), (s * (ex - 7), ey - 4)]
    for s in (-1, 1):  # brows: upper edge inner->outer, then lower edge outer->inner
        xs = np.linspace(ex - 20, ex + 20, 5)
        points += [(s * xv, by + 3) for xv in xs] + [(s * xv, by - 3) for xv in xs[::-1]]
    nx = f["nose_x"]
    points += [(-8, ey - 2), (-10, 18), (-13, 8), (-nx * 0.65, -3), (-nx * 0.4, -9), (-6, -12), (0, -13),
               (6, -12), (nx * 0.65, -3), (13, 8), (10, 18), (8, ey - 2)]  # 37-48, 40/45 alar, 43 subnasale
    mouth_outer = [(-mx, my), (-mx * 0.6, my + 4), (-mx * 0.25, my + 6), (0, my + 6), (mx * 0.25, my + 6),
                   (mx * 0.6, my + 4), (mx, my), (mx * 0.6, my - 6), (mx * 0.25, my - 8), (0, my - 8),
                   (-mx * 0.25, my - 8), (-mx * 0.6, my - 6)]  # 49-60: 49/55 corners, 52/58 midpoints
    mouth_inner = [(-mx * 0.8, my), (-mx * 0.4, my + 1.5), (0, my + 1.5), (mx * 0.4, my + 1.5), (mx * 0.8, my),
                   (mx * 0.4, my - 1.5), (0, my - 1.5), (-mx * 0.4, my - 1.5)]  # 61-68
    points += mouth_outer + mouth_inner
    angles = np.linspace(np.pi * 0.92, np.pi * 0.08, 15)  # 69-83 along the lower contour, 76 = chin
    rx = ident.width / 2 - 10
    reach = ey - f["chin_y"] + 4.0
    points += [(rx * np.cos(a), ey - reach * np.sin(a)) for a in angles]
    out = np.asarray(points, dtype=np.float64)
    assert out.shape == (83, 2)
    return out


BOSPHORUS_LABELS = (
    "Outer left eyebrow", "Middle left eyebrow", "Inner left eyebrow", "Inner right eyebrow",
    "Middle right eyebrow", "Outer right eyebrow", "Outer left eye corner", "Inner left eye corner",
    "Inner right eye corner", "Outer right eye corner", "Nose saddle left", "Nose saddle right",
    "Left nose peak", "Nose tip", "Right nose peak", "Left mouth corner", "Upper lip outer middle",
    "Right mouth corner", "Upper lip inner middle", "Lower lip inner middle", "Lower lip outer middle",
    "Chin middle",
)


def bosphorus_anchors(f: dict) -> dict[str, tuple[float, float]]:
    """Rest (x, y) of the 22 Bosphorus points; "left" is image-left, i.e. negative x (§4.6)."""
    ex, ey, by, mx, my = f["eye_x"], f["eye_y"], f["brow_y"], f["mouth_x"], f["mouth_y"]
    xy = {
        "Outer left eyebrow": (-(ex + 20), by), "Middle left eyebrow": (-ex, by + 2),
        "Inner left eyebrow": (-(ex - 20), by), "Inner right eyebrow": (ex - 20, by),
        "Middle right eyebrow": (ex, by + 2), "Outer right eyebrow": (ex + 20, by),
        "Outer left eye corner": (-(ex + 14), ey), "Inner left eye corner": (-(ex - 14), ey),
        "Inner right eye corner": (ex - 14, ey), "Outer right eye corner": (ex + 14, ey),
        "Nose saddle left": (-8, ey - 2), "Nose saddle right": (8, ey - 2),
        "Left nose peak": (-f["nose_x"] * 0.65, -3), "Nose tip": (0, 0), "Right nose peak": (f["nose_x"] * 0.65, -3),
        "Left mouth corner": (-mx, my), "Upper lip outer middle": (0, my + 6), "Right mouth corner": (mx, my),
        "Upper lip inner middle": (0, my + 1.5), "Lower lip inner middle": (0, my - 1.5),
        "Lower lip outer middle": (0, my - 8), "Chin middle": (0, f["chin_y"]),
    }
    return {label: xy[label] for label in BOSPHORUS_LABELS}
