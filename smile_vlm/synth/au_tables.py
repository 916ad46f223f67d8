"""Published emotion -> action-unit tables, each a list of realisations per emotion.

A realisation (``Recipe``) is the AUs always present with their relative strength at full
intensity, plus what the source leaves open: AUs present with a probability, groups of
alternatives of which one is taken, and AUs of which one may be left out. A sample draws one
recipe of its emotion uniformly, then resolves it. AUs a source names that the generator does not
model (AU11 nasolabial deepener, AU22 lip funneler, AU54 head down, AU64 eyes down) are dropped.
FACS intensity letters become weights: B 0.4, C/D 0.7, an unmarked or starred AU 1.0.

Tables (the ``synthetic.au_tables`` setting names them):

- ``emfacs``: the generator's own EMFACS-like prototypes, one recipe per expression
  (``expressions.PROTOTYPES``; Friesen & Ekman, *EMFACS-7*, 1983), with graded strengths.
- ``facs_guide``: the prototypes and major variants of the FACS Investigator's Guide (Ekman,
  Friesen & Hager, *Facial Action Coding System: Investigator's Guide*, 2002, the emotion
  prediction table of chapter 12).
- ``du2014``: the AUs that more than 70 % of 230 posers used per basic emotion, with the AUs
  some of them used at their reported rates (Du, Tao & Martinez, "Compound facial expressions of
  emotion", PNAS 111(15):E1454-E1462, 2014, Table 1).

Tables other than ``emfacs`` cover the six basic emotions only; an expression no selected table
covers (BP4D's embarrassment and pain, contempt) is drawn from ``emfacs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from smile_vlm.synth.expressions import PROTOTYPES


@dataclass(frozen=True)
class Recipe:
    units: dict  # AU key -> weight at full intensity, always present
    optional: dict = field(default_factory=dict)  # AU key -> (probability, weight)
    one_of: tuple = ()  # groups of (AU key or None, ...): one entry of each group, uniformly
    omit_one: tuple = ()  # AU keys of which one present is left out, uniformly

    def aus(self) -> set:
        """Every AU key this recipe can produce."""
        keys = set(self.units) | set(self.optional)
        return keys | {key for group in self.one_of for key in group if key is not None}


def _r(*units, weights: dict | None = None, **kwargs) -> Recipe:
    return Recipe({**{au: 1.0 for au in units}, **(weights or {})}, **kwargs)


JAW = (25, 26, 27)
MAYBE_JAW = (None, 25, 26, 27)

# FACS Investigator's Guide: prototypes first, then major variants (5B: 0.4; 5Z: maximum, 1.0).
_ANGER = [
    _r(4, 5, 7, 10, 23, one_of=((25, 26),)),  # 4+5*+7+10*+22+23+25,26 (and without 22)
    _r(4, 5, 7, 23, one_of=((25, 26),)),
    _r(4, 5, 7, 17, 23), _r(4, 5, 7, 17, 24), _r(4, 5, 7, 23), _r(4, 5, 7, 24),
]
FACS_GUIDE = {
    "surprise": [
        _r(1, 2, 26, weights={5: 0.4}), _r(1, 2, 27, weights={5: 0.4}),
        _r(1, 2, weights={5: 0.4}), _r(1, 2, 26), _r(1, 2, 27), _r(26, weights={5: 0.4}), _r(27, weights={5: 0.4}),
    ],
    "fear": [
        _r(1, 2, 4, 5, 20, one_of=(JAW,)), _r(1, 2, 4, 5, one_of=(JAW,)),
        _r(1, 2, 4, 5, one_of=(("L20", "R20"), JAW)), _r(1, 2, 4, 5), _r(1, 2, 5, one_of=(MAYBE_JAW,)),
        _r(5, 20, one_of=(MAYBE_JAW,)),
    ],
    "happiness": [_r(6, 12), _r(weights={12: 0.7})],
    "sadness": [
        _r(1, 4, weights={15: 0.4}), _r(1, 4, 15), _r(6, 15),  # 1+4+11+15B, 1+4+15*, 6+15*
        _r(1, 4), _r(1, 4, 17, weights={15: 0.4}), _r(weights={15: 0.4}), _r(17),  # 1+4+11, ..., 11+15B, 11+17
    ],
    "disgust": [
        _r(9), _r(9, 16, one_of=((15, 26),)), _r(9, 17), _r(10), _r(10, 16, one_of=((25, 26),)), _r(10, 17),
    ],
    # variants: any prototype without one of 4, 5, 7 or 10
    "anger": _ANGER + [replace(recipe, omit_one=(4, 5, 7, 10)) for recipe in _ANGER],
}

# Du, Tao & Martinez 2014, Table 1: the AUs of > 70 % of posers, [AU (share of posers)] beside them.
DU_2014 = {
    "happiness": [_r(12, 25, optional={6: (0.51, 1.0)})],
    "sadness": [_r(4, 15, optional={1: (0.60, 1.0), 6: (0.50, 1.0), 17: (0.67, 1.0)})],
    "fear": [_r(1, 4, 20, 25, optional={2: (0.57, 1.0), 5: (0.63, 1.0), 26: (0.33, 1.0)})],
    "anger": [_r(4, 7, 24, optional={10: (0.26, 1.0), 17: (0.52, 1.0), 23: (0.29, 1.0)})],
    "surprise": [_r(1, 2, 25, 26, optional={5: (0.66, 1.0)})],
    "disgust": [_r(9, 10, 17, optional={4: (0.31, 1.0), 24: (0.26, 1.0)})],
}

TABLES: dict[str, dict[str, list[Recipe]]] = {
    "emfacs": {expression: [Recipe(dict(units))] for expression, units in PROTOTYPES.items()},
    "facs_guide": FACS_GUIDE,
    "du2014": DU_2014,
}
OWN_TABLE = "emfacs"  # covers every expression the generator makes


def recipes_for(expression: str, tables) -> list[tuple[str, list[Recipe]]]:
    """(table, recipes) of each selected table that covers ``expression``; the generator's own
    table when none does."""
    unknown = [name for name in tables if name not in TABLES]
    if unknown:
        raise ValueError(f"unknown AU tables {unknown}; known: {', '.join(TABLES)}")
    found = [(name, TABLES[name][expression]) for name in tables if expression in TABLES[name]]
    if not found and expression not in TABLES[OWN_TABLE]:
        raise ValueError(f"no AU table covers the expression {expression!r}")
    return found or [(OWN_TABLE, TABLES[OWN_TABLE][expression])]


def resolve(recipe: Recipe, rng) -> dict:
    """The AU weights of one draw of ``recipe``; draws from ``rng`` only for what it leaves open."""
    units = dict(recipe.units)
    for key, (probability, weight) in recipe.optional.items():
        if rng.random() < probability:
            units[key] = weight
    for group in recipe.one_of:
        pick = group[int(rng.integers(len(group)))]
        if pick is not None:
            units[pick] = 1.0
    present = [key for key in recipe.omit_one if key in units]
    if present:
        del units[present[int(rng.integers(len(present)))]]
    return units
