"""FACS-captioned vision-language pretraining of the vision encoder on generated faces.

``pretrain`` trains the SMILE-VLM vision side on the captioned corpus of generated faces
(``smile_vlm.corpus``) with the project's own objectives, without labels of any evaluation dataset:

* L_vl-align (Eq. 6): InfoNCE of every view and of the fused embedding against the frozen text
  tower's embedding of the sample's caption;
* L_mv-bt (Eq. 1-4): Barlow Twins between two augmentations of every view;

weighted as in Eq. 10 with gamma = 0 (``losses.smile_vlm_loss``; red-min is left out: captions
are not class prompts), plus, our addition beyond the paper, ``au_align`` times L_au-align: a
SigLIP sigmoid loss of every view and the fused embedding against one phrase per action unit
(``smile_vlm.au_align``, ``losses.au_align_loss``), positive where the sample's apex shows it.
The vision encoder's weights go to ``vision.pt``, which ``encoders.vision.init`` loads into every
fold model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path

import torch

from smile_vlm import atomic
from smile_vlm.corpus import check_corpus_options, corpus_digest, load_or_build_corpus
from smile_vlm.settings import DEFAULT_VISION_SPEC, PRETRAIN_DEFAULTS, PRETRAIN_RENDER_KEYS, complete

log = logging.getLogger(__name__)

DEFAULTS = PRETRAIN_DEFAULTS  # the schema's pretrain section (threads and variants are not run settings)


def resolve(settings: dict | None) -> dict:
    """``{"pretrain", "render", "encoders"}`` with the pretrain defaults filled in; unknown keys refused.

    The pretrain command's settings, resolved once: ``render`` keeps the keys given (the corpus's
    digest names them); the corpus completes them for its renderer."""
    settings = copy.deepcopy(settings or {})
    unknown = set(settings) - {"pretrain", "render", "encoders"}
    if unknown:
        raise ValueError(f"unknown pretraining settings sections {sorted(unknown)} (known: encoders, pretrain, render)")
    extra = set(settings.get("pretrain") or {}) - set(DEFAULTS)
    if extra:
        raise ValueError(f"unknown pretrain settings {sorted(extra)} (known: {', '.join(sorted(DEFAULTS))})")
    pretrain = check_corpus_options(complete("pretrain", settings.get("pretrain")))
    if pretrain["identities"] < 1 or pretrain["samples_per_identity"] < 1:
        raise ValueError("pretrain.identities and pretrain.samples_per_identity must be at least 1")
    if pretrain["frames"] < 2:
        raise ValueError(f"pretrain.frames must be at least 2 (a dynamic image needs motion), got {pretrain['frames']}")
    render = {k: v for k, v in (settings.get("render") or {}).items() if k in PRETRAIN_RENDER_KEYS}
    return {"pretrain": pretrain, "render": render, "encoders": settings.get("encoders") or {}}


# --------------------------------------------------------------------------- training


def vision_spec(settings: dict) -> dict:
    """The encoders.vision spec to pretrain (without ``init``)."""
    vision = {k: v for k, v in (settings["encoders"].get("vision") or {}).items() if k != "init" and v is not None}
    return {**DEFAULT_VISION_SPEC, **vision}


def build_pretrain_model(settings: dict, n_views: int, text_dim: int):
    """The SMILE-VLM vision side (encoder, projector, view-aware fusion) with Eq. 10 at gamma = 0."""
    from smile_vlm.models import build_model

    pretrain = settings["pretrain"]
    variant = {"model": "smile_vlm", "vision": vision_spec(settings), "projector": list(pretrain["projector"]),
               "loss": {"alpha": float(pretrain["alpha"]), "beta": float(pretrain["beta"]), "gamma": 0.0,
                        "tau": float(pretrain["tau"])}}
    return build_model(variant, n_views, text_dim)


def fixed_batch(model, clean: torch.Tensor) -> dict:
    """The model's embeddings of a fixed batch with batch statistics and no update of anything:
    they change only when the weights do (so a run that learns nothing keeps its monitors exactly)."""
    from smile_vlm.models.common import running_stats_frozen

    was_training = model.training
    model.train()
    with torch.no_grad(), running_stats_frozen(model):
        out = model(clean)
    model.train(was_training)
    return out


def monitor_alignment(model, clean: torch.Tensor, text_emb: torch.Tensor, tau: float) -> float:
    """L_vl-align (Eq. 6) of a fixed batch (``fixed_batch``)."""
    from smile_vlm.losses import vl_align_loss

    out = fixed_batch(model, clean)
    return float(vl_align_loss(out["z_views"], out["z_fused"], text_emb, tau))


def _checkpoint_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def embed_captions(text_spec: dict | None, captions: list[str]) -> torch.Tensor:
    """(N, D) frozen text-tower embeddings of the captions (each distinct caption embedded once)."""
    from smile_vlm.models.encoders import load_text_encoder

    started = time.perf_counter()
    unique = sorted(set(captions))
    embedded = load_text_encoder(text_spec).encode(unique)
    position = {text: k for k, text in enumerate(unique)}
    log.info("%d captions (%d distinct) embedded by the frozen text tower in %.1f s",
             len(captions), len(unique), time.perf_counter() - started)
    return embedded[torch.tensor([position[c] for c in captions])]


def unit_alignment(text_spec: dict | None, units: list[str], tau: float):
    """(AuAlignment, targets (N, K), known (N, K)) of the corpus's apex ``units`` (``au_align``),
    its phrases embedded by the text tower of ``text_spec``."""
    from smile_vlm import au_align

    samples = [au_align.sample_units(text) for text in units]
    keys = au_align.phrase_keys(samples)
    texts = [au_align.phrase_texts(key) for key in keys]
    embedded = embed_captions(text_spec, [t for group in texts for t in group])
    target, known = au_align.targets(samples, keys)
    log.info("action-unit alignment: %d phrases (%s), %.1f positives per sample", len(keys),
             " ".join(map(str, keys)), float(target.sum(dim=1).mean()))
    return au_align.AuAlignment(au_align.ensemble(embedded, list(map(len, texts))), 1.0 / tau), target, known


def monitor_units(model, head, clean: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> float:
    """L_au-align of the fixed batch (``fixed_batch``)."""
    out = fixed_batch(model, clean)
    with torch.no_grad():
        return float(head(out["z_views"], out["z_fused"], target, known))


def train_epoch(model, optimizer, augmenter, images: torch.Tensor, text_emb: torch.Tensor, batch_size: int,
                generator: torch.Generator, dtype: torch.dtype | None, units=None) -> dict[str, float]:
    """One pass over the corpus in full batches; mean of each term over the steps. ``units``:
    (weight, AuAlignment, targets, known) of the action-unit term, or None without it."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    sums = {"total": 0.0, "vl_align": 0.0, "mv_bt": 0.0, **({"au_align": 0.0} if units else {})}
    n_steps = 0
    for start in range(0, len(images) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        batch = images[index]
        views_a, views_b = augmenter.two_views(batch, generator)  # Eq. 1's two distortions
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = model.training_losses(views_a, views_b, augmenter.clean(batch), text_emb[index], None, None,
                                           embeddings=units is not None)
        if units:
            weight, head, target, known = units
            losses["au_align"] = head(losses["z_views"], losses["z_fused"], target[index], known[index])
            losses["total"] = losses["total"] + weight * losses["au_align"]
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        for key in sums:
            sums[key] += float(losses[key].detach())
        n_steps += 1
    return {key: value / n_steps for key, value in sums.items()}


def pretrain(settings: dict | None, out_path: str | Path, threads: int | None = None) -> dict:
    """Pretrain the vision encoder and write ``out_path`` (vision.pt) atomically; return its metadata.

    The corpus is cached beside it (``corpus.npz``, reused while its settings are unchanged) and
    the run checkpoints after every epoch (``checkpoint.pt``, removed once vision.pt is written),
    so a killed job resumes where it stopped.
    """
    from smile_vlm.augment import Augmenter
    from smile_vlm.runtime import amp_dtype

    settings = resolve(settings)
    options = settings["pretrain"]
    if threads:
        torch.set_num_threads(int(threads))
    out_path = Path(out_path)
    checkpoint_path = out_path.with_name("checkpoint.pt")
    corpus = load_or_build_corpus(settings, out_path.with_name("corpus.npz"))
    text_emb = embed_captions(settings["encoders"].get("text"), corpus["captions"])

    images = torch.from_numpy(corpus["images"])  # (N, V, S, S, 3) uint8
    n_samples, n_views = images.shape[:2]
    batch_size = min(int(options["batch_size"]), n_samples)
    if batch_size < 2:
        raise ValueError("pretraining needs at least 2 samples per batch (batch statistics of Eq. 1 and 6)")
    torch.manual_seed(int(options["seed"]))
    model = build_pretrain_model(settings, n_views, int(text_emb.shape[1]))
    encoder = model.encoder.vision_encoder
    augmenter = Augmenter(encoder.image_size, options["augment"], encoder.mean, encoder.std)
    groups = [{"params": list(model.parameters())}]
    units = None
    if float(options["au_align"]):
        head, target, known = unit_alignment(settings["encoders"].get("text"), corpus["units"], float(options["tau"]))
        units = (float(options["au_align"]), head, target, known)
        groups.append({"params": list(head.parameters()), "weight_decay": 0.0})  # SigLIP's t and c: no decay
    optimizer = torch.optim.AdamW(groups, lr=float(options["lr"]), weight_decay=float(options["weight_decay"]))
    generator = torch.Generator().manual_seed(int(options["seed"]))
    dtype = amp_dtype(str(options["amp"]), torch.device("cpu"))  # the losses stay float32
    monitor = torch.arange(min(n_samples, int(options["monitor_samples"])))
    monitor_args = (augmenter.clean(images[monitor]), text_emb[monitor], float(options["tau"]))

    def monitored() -> dict[str, float]:
        row = {"monitor_vl_align": monitor_alignment(model, *monitor_args)}
        if units:
            head = units[1]
            row["monitor_au_align"] = monitor_units(model, head, monitor_args[0], units[2][monitor], units[3][monitor])
            row.update(au_scale=float(head.log_scale.detach().exp()), au_bias=float(head.bias.detach()))
        return row

    history = [{"epoch": 0, **monitored()}]
    digest = _checkpoint_digest(settings)
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("digest") == digest:
            model.load_state_dict(state["model"])
            if units:
                units[1].load_state_dict(state["au_align"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            history = state["history"]
            log.info("resuming pretraining after epoch %d from %s", len(history) - 1, checkpoint_path)

    for epoch in range(len(history), int(options["epochs"]) + 1):
        started = time.perf_counter()
        row = {"epoch": epoch, **train_epoch(model, optimizer, augmenter, images, text_emb, batch_size, generator, dtype,
                                             units), **monitored()}
        row["seconds"] = round(time.perf_counter() - started, 2)
        history.append(row)
        log.info("epoch %d of %d: vl-align %.4f, mv-bt %.3f, monitored vl-align %.4f%s (%.1f s)", epoch,
                 int(options["epochs"]), row["vl_align"], row["mv_bt"], row["monitor_vl_align"],
                 f", au-align {row['au_align']:.4f}, monitored {row['monitor_au_align']:.4f} (t {row['au_scale']:.2f}, "
                 f"c {row['au_bias']:.2f})" if units else "", row["seconds"])
        extra = {"au_align": units[1].state_dict()} if units else {}
        with atomic.atomic_path(checkpoint_path) as tmp:
            torch.save({"digest": digest, "model": model.state_dict(), "history": history, **extra,
                        "optimizer": optimizer.state_dict(), "generator": generator.get_state()}, tmp)

    metadata = vision_file(settings, model, history, corpus)
    with atomic.atomic_path(out_path) as tmp:
        torch.save(metadata, tmp)
    checkpoint_path.unlink(missing_ok=True)
    return metadata


def vision_file(settings: dict, model, history: list[dict], corpus: dict) -> dict:
    """What vision.pt holds: the encoder's weights and architecture (checked by encoders.vision.init),
    the projector's and fusion's weights (not loaded by init), the settings, the loss history and the corpus."""
    from smile_vlm.models.encoders import PRETRAINED_VISION_FORMAT, vision_architecture

    state = model.encoder.vision_encoder.state_dict()
    weights = hashlib.sha256()
    for name, tensor in state.items():
        weights.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return {
        "format": PRETRAINED_VISION_FORMAT,
        "weights_sha256": weights.hexdigest(),  # tells a resumed fine-tuning that vision.pt was rebuilt
        "architecture": vision_architecture(vision_spec(settings)),
        "state_dict": state,
        "projector_state_dict": model.encoder.projector.state_dict(),
        "fusion_state_dict": model.fusion.state_dict(),  # with the projector: the whole pretrained model (wise.py)
        "text_encoder": json.dumps(settings["encoders"].get("text")),
        "settings": json.dumps(settings, sort_keys=True, default=str),
        "history": history,
        "corpus": {"samples": len(corpus["captions"]), "views": int(corpus["images"].shape[1]),
                   "digest": corpus_digest(settings), "subjects": sorted(set(corpus["subjects"])),
                   "dynamic": int(sum(map(bool, corpus["dynamic"])))},
    }
