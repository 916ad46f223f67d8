"""Replay of the pretraining's captioned corpus during fine-tuning, to keep its text-aligned space.

A fold model fine-tuned on six emotion prompts stops answering the captions its pretraining
learned (single action units: BENCHMARKS.md, "Zero-shot on a class no fold trained a prompt
for"). With a variant's ``replay`` weight w > 0 (and its ``vision.init``, a pretraining's
vision.pt), every fine-tuning step also draws as many samples of that pretraining's corpus as the
fold's batch holds and adds w times the pretraining's own alignment on their clean views:

    L = L_fold + w * (L_vl-align(corpus views, their captions) + a * L_au-align)

with Eq. 6's InfoNCE against each sample's caption and, when the pretraining used it (its
``au_align`` weight a), the action-unit term of ``smile_vlm.au_align`` with SigLIP's scale and
bias held at their starting values (1/tau and 0), so that the fold's checkpoint gains nothing to
resume. With ``replay_class_negatives`` (the default) the fold's class prompts join the InfoNCE's
negatives of every replayed sample whose caption names no emotion (free action-unit
combinations, neutral faces): Eq. 6 alone only ranks captions against captions, and a fine-tuned
model's trained prompts then outscore any new one; this asks a face that shows only, say, a
stretched mouth to sit nearer its caption than "surprise". This is rehearsal, the oldest
remedy for forgetting (Robins, "Catastrophic forgetting, rehearsal and pseudorehearsal",
Connection Science 1995; for vision-language models e.g. ZSCL, Zheng et al., ICCV 2023);
WiSE-FT (``smile_vlm.wise``) is the weight-space alternative.

The corpus is the ``corpus.npz`` the pretraining cached beside its vision.pt, checked against the
vision.pt's settings. It is read whole once when the fold starts (about 350 MB of images for
the default pretraining's 2,400 samples, bounded by the pretraining's own settings) and only
``replay_samples`` of it (a seeded draw, fixed for the fold) are kept, with their caption
embeddings. The replayed forward pass leaves BatchNorm's running
statistics alone: evaluation normalises the fold's scans, not the corpus's renders.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from smile_vlm.configcheck import replay_problems
from smile_vlm.errors import ScanError
from smile_vlm.synth.captions import named_emotion

log = logging.getLogger(__name__)

CORPUS_NAME = "corpus.npz"  # where smile_vlm.pretrain caches its corpus: beside vision.pt


@dataclass
class Replay:
    """The replayed samples of one fold: images (N, V, S, S, 3) uint8, caption embeddings (N, D),
    and the action-unit term's phrases (K, D), targets and known (N, K) when the pretraining used it."""

    weight: float
    images: Tensor
    captions: Tensor
    tau: float
    unit_weight: float = 0.0
    phrases: Tensor | None = None
    targets: Tensor | None = None
    known: Tensor | None = None
    free: Tensor | None = None  # (N,) bool: the caption names no emotion (class prompts are its negatives)

    def draw(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """Positions of one step's replayed samples (without repeats when the subset allows)."""
        if batch_size <= len(self.images):
            return torch.randperm(len(self.images), generator=generator)[:batch_size]
        return torch.randint(len(self.images), (batch_size,), generator=generator)

    def losses(self, model, clean: Tensor, index: Tensor, class_emb: Tensor) -> dict[str, Tensor]:
        """The replayed terms of the samples at ``index`` (``clean``: their clean views); "replay" is
        their sum. ``class_emb`` (K, D): the fold's class prompts, negatives of the ``free`` samples."""
        from smile_vlm.losses import au_align_loss, vl_align_loss
        from smile_vlm.models.common import running_stats_frozen

        with running_stats_frozen(model):
            out = model(clean)
        device = clean.device
        negatives = {}
        if self.free is not None:
            mask = self.free[index].to(device)[:, None].expand(len(index), len(class_emb))
            negatives = {"negatives": class_emb, "negative_mask": mask}
        terms = {"replay_vl_align": vl_align_loss(out["z_views"], out["z_fused"], self.captions[index].to(device),
                                                  self.tau, **negatives)}
        total = terms["replay_vl_align"]
        if self.phrases is not None:
            scale = torch.tensor(1.0 / self.tau, device=device)
            terms["replay_au_align"] = au_align_loss(out["z_views"], out["z_fused"], self.phrases.to(device),
                                                     self.targets[index].to(device), self.known[index].to(device),
                                                     scale, torch.zeros((), device=device))
            total = total + self.unit_weight * terms["replay_au_align"]
        return {"replay": total, **terms}


def corpus_path(init) -> Path:
    """The corpus a pretraining's vision.pt was trained on."""
    return Path(init).with_name(CORPUS_NAME)


def load_replay(variant: dict, text_spec: dict | None, n_views: int, seed: int) -> Replay | None:
    """The fold's Replay for ``variant`` (None when its ``replay`` weight is 0). ``text_spec``: the
    fold's text encoder, which embeds the captions as it embeds the class prompts."""
    from smile_vlm.corpus import cached_corpus
    from smile_vlm.pretrain import embed_captions, unit_alignment
    from smile_vlm.settings import VARIANT_DEFAULTS
    from smile_vlm.wise import read_vision

    weight = float(variant.get("replay", VARIANT_DEFAULTS["replay"]))
    if not weight:
        return None
    problems = replay_problems({**VARIANT_DEFAULTS, **variant})
    if problems:
        raise ValueError(f"variant replay: {problems[0]}")
    init = variant["vision"]["init"]
    settings = json.loads(read_vision(init)["settings"])
    path = corpus_path(init)
    corpus = cached_corpus(settings, path)
    if corpus is None:
        raise ScanError(path, "replay needs the corpus the pretraining of "
                              f"{Path(init).name} cached beside it (missing, or built with other settings): "
                              "rerun smile-vlm pretrain with that vision.pt's settings and --out, or set replay: 0")
    if corpus["images"].shape[1] != n_views:
        raise ScanError(path, f"the corpus has {corpus['images'].shape[1]} views, the fold's store {n_views}")
    n = len(corpus["captions"])
    keep = np.sort(np.random.default_rng(seed).choice(n, size=min(n, int(variant.get(
        "replay_samples", VARIANT_DEFAULTS["replay_samples"]))), replace=False))
    captions = [corpus["captions"][i] for i in keep]
    pretrain = settings["pretrain"]
    replay = Replay(weight=weight, images=torch.from_numpy(np.ascontiguousarray(corpus["images"][keep])),
                    captions=embed_captions(text_spec, captions), tau=float(pretrain["tau"]))
    if float(pretrain.get("au_align") or 0):
        head, target, known = unit_alignment(text_spec, [corpus["units"][i] for i in keep], replay.tau)
        replay.unit_weight, replay.phrases, replay.targets, replay.known = (
            float(pretrain["au_align"]), head.phrases, target, known)
    if variant.get("replay_class_negatives", VARIANT_DEFAULTS["replay_class_negatives"]):
        replay.free = torch.tensor([named_emotion(text) is None for text in captions])
    log.info("replay: %d of the %d corpus samples of %s, weight %g%s", len(keep), n, path, weight,
             f", action-unit term weight {replay.unit_weight:g}" if replay.phrases is not None else "")
    return replay
