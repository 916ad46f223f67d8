"""How one synthetic subject realises expressions: which published AU table a sample follows, and
how this person differs from the tables (the ``au_tables`` and ``variation`` settings).

Per sample: a table among the selected ones that cover the expression, one of its recipes
(``au_tables``), the log-normal jitter and stray AU of ``expressions.jittered``, then each AU left
out with probability ``au_dropout`` (one is always kept) and, with probability
``extra_au_probability``, one AU from outside the recipe co-activated at up to ``extra_au_weight``
times the sample's intensity.

Per identity, drawn once from the subject's own stream: a log-normal gain of every AU
(``au_gain_sigma``: how far each AU moves this face), a side bias b uniform in ±``asymmetry`` (each
AU that FACS scores one-sided acts with 1 + b on the subject's left and 1 - b on the right) and a
time warp t -> t^g with log g normal of ``timing_sigma`` (earlier or later apex). Settings at 0 draw
nothing, so the defaults give the generator's earlier bytes.
"""

from __future__ import annotations

import numpy as np

from smile_vlm.synth.au_tables import recipes_for, resolve
from smile_vlm.synth.expressions import ACTION_UNITS, STRAY_CANDIDATES, jittered
from smile_vlm.synth.profiles import temporal_profile
from smile_vlm.synth.units import UNILATERAL_UNITS, parse_unit


class Realiser:
    """The expression realisations of one subject (``style_rng``: the subject's own stream)."""

    def __init__(self, tables, variation: dict, style_rng: np.random.Generator):
        self.tables = list(tables)
        self.variation = variation
        sigma = float(variation["au_gain_sigma"])
        self.gain = {au: float(np.exp(g)) for au, g in zip(ACTION_UNITS, style_rng.normal(0.0, sigma, len(ACTION_UNITS)))} if sigma else {}
        bound = float(variation["asymmetry"])
        self.side_bias = float(style_rng.uniform(-bound, bound)) if bound else 0.0
        timing = float(variation["timing_sigma"])
        self.time_warp = float(np.exp(style_rng.normal(0.0, timing))) if timing else 1.0

    def weights(self, expression: str, scale: float, rng: np.random.Generator, *, jitter: float) -> dict:
        """AU weights of one sample of ``expression`` at intensity ``scale``."""
        choices = recipes_for(expression, self.tables)
        _, recipes = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        recipe = recipes[int(rng.integers(len(recipes)))] if len(recipes) > 1 else recipes[0]
        weights = jittered(resolve(recipe, rng), scale, rng, jitter=jitter)
        weights = self._dropout(weights, rng)
        extra = float(self.variation["extra_au_probability"])
        if extra and rng.random() < extra:
            candidates = [au for au in STRAY_CANDIDATES if all(parse_unit(key)[0] != au for key in weights)]
            au = int(rng.choice(candidates))
            weights[au] = float(rng.uniform(0.0, float(self.variation["extra_au_weight"]))) * scale
        return self.individualise(weights)

    def _dropout(self, weights: dict, rng: np.random.Generator) -> dict:
        rate = float(self.variation["au_dropout"])
        if not rate or not weights:
            return weights
        kept = {key: w for key, w in weights.items() if rng.random() >= rate}
        if not kept:  # an expression keeps at least its strongest AU
            key = max(weights, key=weights.get)
            kept = {key: weights[key]}
        return kept

    def individualise(self, weights: dict) -> dict:
        """``weights`` as this face makes them: its per-AU gains and side bias."""
        if self.gain:
            weights = {key: w * self.gain[parse_unit(key)[0]] for key, w in weights.items()}
        if self.side_bias:
            sided = {}
            for key, w in weights.items():
                au, side = parse_unit(key)
                if side is None and au in UNILATERAL_UNITS:
                    sided[f"L{au}"] = sided.get(f"L{au}", 0.0) + w * (1 + self.side_bias)
                    sided[f"R{au}"] = sided.get(f"R{au}", 0.0) + w * (1 - self.side_bias)
                else:
                    sided[key] = sided.get(key, 0.0) + w
            weights = sided
        return weights

    def profile(self, n_frames: int, rng: np.random.Generator, style: str) -> np.ndarray:
        """``profiles.temporal_profile`` on this subject's time axis."""
        strength = temporal_profile(n_frames, rng, style)
        if self.time_warp == 1.0:
            return strength
        t = np.linspace(0.0, 1.0, n_frames)
        return np.interp(t ** self.time_warp, t, strength)
