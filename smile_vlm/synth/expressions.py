"""Which action units make an expression: the emotion prototypes, intensity levels, 4DME's
micro-expression AU sets and labels, and one sample's jittered AU weights."""

from __future__ import annotations

import numpy as np

from smile_vlm.readers.names import BASIC_EMOTIONS, CLASSES

EMOTIONS = tuple(BASIC_EMOTIONS)

ACTION_UNITS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 27, 43, 45)

# EMFACS prototypes; weights are the relative strength of each AU at full intensity.
PROTOTYPES: dict[str, dict] = {  # AU key (units.py) -> weight
    "neutral": {},
    "happiness": {6: 1.0, 12: 1.0, 25: 0.3},
    "sadness": {1: 1.0, 4: 0.6, 15: 1.0, 17: 0.5},
    "surprise": {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0, 25: 0.5},
    "fear": {1: 1.0, 2: 0.7, 4: 0.6, 5: 1.0, 7: 0.4, 20: 1.0, 26: 0.5, 25: 0.5},
    "anger": {4: 1.0, 5: 0.6, 7: 0.8, 23: 1.0, 24: 0.6},
    "disgust": {9: 1.0, 10: 0.8, 15: 0.6, 16: 0.5, 4: 0.3},
    # BP4D tasks without a basic-emotion counterpart
    "embarrassment": {12: 0.6, 24: 0.6, 14: 0.5, 43: 0.3},
    "pain": {4: 0.8, 6: 0.8, 7: 1.0, 9: 0.6, 10: 0.6, 43: 0.4},
    # one-sided (R12A+R14A in EMFACS); no default dataset shows it: an unseen class for zero-shot tests
    "contempt": {"R12": 1.0, "R14": 1.0},
}
# Expressions the generator makes that no default dataset uses.
UNSEEN_EXPRESSIONS = ("contempt",)

# BU-3DFE levels 01..04 (01 = lowest); level 0 is neutral.
INTENSITY_SCALE = {0: 0.0, 1: 0.35, 2: 0.6, 3: 0.8, 4: 1.0}

# 4DME derives its five emotion labels from the coded AUs (objective classes, §5.1).
MICRO_CLASSES = tuple(CLASSES["4dme"])
_MICRO_RULES = {
    "positive": {6, 12},
    "negative": {4, 7, 9, 10, 20},
    "surprise": {1, 2, 5, 26},
    "repression": {14, 15, 17, 23, 24},
}
# AU sets a micro-expression clip is drawn from; several give two labels at once.
MICRO_TEMPLATES: tuple[tuple[int, ...], ...] = (
    (12,), (6, 12), (4,), (4, 7), (9,), (10,), (1, 2), (5,), (1, 2, 5),
    (14,), (17,), (23,), (24,), (15, 17), (1, 2, 4), (12, 17), (25,), (16,), (45,),
)


def micro_labels(aus) -> list[str]:
    """The 4DME emotion classes implied by a set of AU numbers (``others`` when none match)."""
    present = {int(a) for a in aus}
    labels = [name for name, rule in _MICRO_RULES.items() if present & rule]
    return labels or ["others"]


# Posers never hit a prototype exactly: half of the samples get one unrelated AU up to this weight.
STRAY_AU_WEIGHT = 0.15
STRAY_CANDIDATES = tuple(au for au in ACTION_UNITS if au not in (26, 27, 43, 45))  # no jaw drop or closed eyes


def expression_weights(expression: str, scale: float, rng: np.random.Generator, *,
                       jitter: float, leak: float = STRAY_AU_WEIGHT) -> dict:
    """AU weights of one sample of the EMFACS prototype: scaled, each AU jittered, maybe one stray AU."""
    return jittered(PROTOTYPES[expression], scale, rng, jitter=jitter, leak=leak)


def jittered(units: dict, scale: float, rng: np.random.Generator, *, jitter: float,
             leak: float = STRAY_AU_WEIGHT) -> dict:
    """``units`` (AU key -> weight at full intensity) scaled, each AU jittered, maybe one stray AU.

    The log-normal jitter and the occasional unrelated AU make classes overlap a little, as
    posers never hit a prototype exactly.
    """
    weights = {au: w * scale * float(np.exp(rng.normal(0.0, jitter))) for au, w in units.items()}
    if leak and rng.random() < 0.5:
        stray = int(rng.choice(STRAY_CANDIDATES))
        weights[stray] = weights.get(stray, 0.0) + float(rng.uniform(0.0, leak))
    return weights
