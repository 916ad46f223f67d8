"""Single-action-unit phrases of the pretraining and what each corpus sample shows of them.

Our addition beyond SMILE-VLM: besides InfoNCE against its whole caption (Eq. 6), the pretraining
aligns every sample with one phrase per action unit, so that the image space answers to single-AU
prompts (``losses.au_align_loss``, weighted by ``pretrain.au_align``). The phrases:

* one per AU the generator models (``synth.expressions.ACTION_UNITS``) and one per one-sided form
  the corpus holds (``"L12"``): the caption of that AU alone (``synth.captions.caption``) at the
  weights of PHRASE_WEIGHTS, ensembled as prompts are (mean of the normalised embeddings,
  renormalised), the very prompts ``benchmarks/bench_au_detection.py`` asks;
* the neutral caption.

Every sample, dynamic images too, meets the phrases worded for a static face: they are what a
user asks, and giving dynamic images the phrases of a sequence measured no better
(BENCHMARKS.md, "Action units: an action-unit term in the pretraining").

A sample shows a phrase's AU when its apex weight (the generator's, kept in the corpus) reaches
the caption's visible level. A bilateral AU's phrase is left out of the loss for a sample showing
the AU on one side only, and a one-sided phrase for one showing it on both: neither is wrong.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from smile_vlm.synth.captions import active_units, caption
from smile_vlm.synth.units import parse_unit, unit_key, unit_order

PHRASE_WEIGHTS = (0.6, 0.8, 1.0)  # FACS C, D, E: the intensities a single-AU prompt names
NEUTRAL = "neutral"  # the phrase key of the neutral caption


def sample_units(units_json: str) -> dict:
    """The visible AUs of one corpus sample's apex weights (``corpus`` ``units``), an AU active on
    both sides written as the bilateral AU (as its caption names it)."""
    from smile_vlm.corpus import both_sides_merged

    weights = {unit_key(*parse_unit(key)): float(w) for key, w in json.loads(units_json).items()}
    return active_units(both_sides_merged(weights))


def phrase_keys(samples: list[dict]) -> list:
    """Every modelled AU, the one-sided forms ``samples`` show, then the neutral phrase."""
    from smile_vlm.synth.expressions import ACTION_UNITS

    one_sided = {key for units in samples for key in units if parse_unit(key)[1] is not None}
    return [*ACTION_UNITS, *sorted(one_sided, key=unit_order), NEUTRAL]


def phrase_texts(key) -> list[str]:
    """The captions whose ensemble is the phrase of ``key`` (an AU key or NEUTRAL)."""
    if key == NEUTRAL:
        return [caption({})]
    return [caption({key: w}) for w in PHRASE_WEIGHTS]


def targets(samples: list[dict], keys: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float targets (1 = the sample shows phrase k) and bool ``known`` (False: left out)."""
    target = torch.zeros(len(samples), len(keys))
    known = torch.ones(len(samples), len(keys), dtype=torch.bool)
    for b, units in enumerate(samples):
        shown = {parse_unit(key) for key in units}
        for k, key in enumerate(keys):
            if key == NEUTRAL:
                target[b, k] = float(not units)
                continue
            au, side = parse_unit(key)
            target[b, k] = float((au, side) in shown)
            if side is None:
                known[b, k] = not any(a == au and s is not None for a, s in shown)
            else:
                known[b, k] = (au, None) not in shown
    return target, known


def ensemble(embedded: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """(K, D) phrases from the (sum(counts), D) embeddings of their captions, in order."""
    parts = torch.split(nn.functional.normalize(embedded.float(), dim=-1), counts)
    return nn.functional.normalize(torch.stack([part.mean(dim=0) for part in parts]), dim=-1)


class AuAlignment(nn.Module):
    """The phrases (a frozen buffer) and the sigmoid loss's learnable scale and bias (SigLIP)."""

    def __init__(self, phrases: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("phrases", phrases.detach().float())
        # SigLIP learns log t and c; we start t at the pretraining's 1/tau (the zero-shot logit
        # scale) and c at 0, since with a few dozen phrases positives and negatives are balanced
        # enough that SigLIP's -10 (for a batch of thousands of captions) would only slow it down.
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log())
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, z_views, z_fused, target, known, view_mask=None) -> torch.Tensor:
        from smile_vlm.losses import au_align_loss

        return au_align_loss(z_views, z_fused, self.phrases, target, known, self.log_scale.exp(), self.bias, view_mask)
