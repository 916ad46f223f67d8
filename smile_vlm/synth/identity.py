"""A synthetic subject: face shape and skin, drawn once per subject."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RACES = ("WH", "AE", "BL", "LA", "IN", "AM")
_SKIN_TONES = {  # linear RGB in [0, 1], one base tone per BU-3DFE race code
    "WH": (0.87, 0.70, 0.60), "AE": (0.86, 0.72, 0.56), "BL": (0.45, 0.30, 0.22),
    "LA": (0.74, 0.56, 0.42), "IN": (0.62, 0.44, 0.32), "AM": (0.78, 0.60, 0.47),
}


@dataclass(frozen=True)
class Identity:
    """Per-subject shape and appearance, all in millimetres (colours in [0, 1])."""

    width: float
    height: float
    depth: float
    nose_length: float
    nose_width: float
    nose_height: float
    mouth_width: float
    eye_spacing: float
    brow_height: float
    chin: float
    mouth_corner_rest: float  # some faces have corners naturally up or down
    superellipse: float  # crop shape; also makes vertex counts differ per subject
    skin: tuple[float, float, float]
    texture_seed: int
    race: str = "WH"


def sample_identity(rng: np.random.Generator, race: str | None = None) -> Identity:
    race = race or str(rng.choice(RACES, p=[0.5, 0.24, 0.09, 0.08, 0.06, 0.03]))
    tone = np.clip(np.asarray(_SKIN_TONES[race]) * rng.normal(1.0, 0.06) + rng.normal(0, 0.02, 3), 0.1, 0.95)
    return Identity(
        width=float(rng.uniform(138, 162)),
        height=float(rng.uniform(185, 210)),
        depth=float(rng.uniform(62, 80)),
        nose_length=float(rng.uniform(26, 36)),
        nose_width=float(rng.uniform(30, 40)),
        nose_height=float(rng.uniform(22, 30)),
        mouth_width=float(rng.uniform(44, 56)),
        eye_spacing=float(rng.uniform(58, 70)),
        brow_height=float(rng.uniform(11, 17)),
        chin=float(rng.uniform(-4, 4)),
        mouth_corner_rest=float(rng.normal(0, 1.5)),
        superellipse=float(rng.uniform(2.0, 2.6)),
        skin=tuple(float(c) for c in tone),
        texture_seed=int(rng.integers(2**31)),
        race=race,
    )
