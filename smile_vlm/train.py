"""Training of one fold of SMILE-VLM (or FACET-VLM, through the same model interface).

Recipe (SMILE-VLM §III-D): frozen text encoder, trainable vision side, AdamW with weight decay;
here with a linear warmup and a cosine decay per step. Defaults: the schema's ``train`` section.

    smile-vlm train --store store.zarr --folds folds.csv --k 3 --variant '{"model": "smile_vlm"}' \
        --settings '{"train": {"epochs": 30}}' --out runs/k3

Several GPUs: ``torchrun --nproc_per_node 4 -m smile_vlm train ...`` (DDP starts when
WORLD_SIZE > 1). Every epoch writes ``out/checkpoint.pt`` atomically; a rerun with the same
arguments resumes from it and reaches the same weights as an uninterrupted run (per-epoch seeded
data order and augmentations, restored RNG states). A checkpoint of another recipe is not
resumed: the fold starts over (the log says so). ``out/model.pt`` is written last;
``out/train_log.jsonl`` holds one line per logged step and per epoch.

Prompt sources (``prompts.source``): ``"label"`` (the paper, §II-A/§III-C) draws each sample's
prompt from its own class, so the label enters training through the prompt, although the paper
calls this self-supervised. ``"pseudo"`` uses no label: each epoch starts by scoring the training
samples zero-shot with the current model and draws prompts from those pseudo-classes; the true
labels are removed from every batch first (``_without_labels``), and FACET-VLM's cross-entropy
trains on the pseudo-labels. From random weights the first pseudo-labels are chance, so this needs
an aligned start (CLIP, or ``encoders.vision.init``).

DDP: mv-bt and red-min (Eq. 1, 8) standardise each embedding dimension over the batch and
vl-align's negatives (Eq. 6) are the batch's prompts, so every rank's losses see the embeddings of
all ranks, gathered differentiably (runtime.global_batch): the single-process loss of the global batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from smile_vlm import checkpoint as ckpt
from smile_vlm import runtime
from smile_vlm.augment import Augmenter
from smile_vlm.data import StoreDataset
from smile_vlm.errors import ScanError
from smile_vlm.folds import fold_samples
from smile_vlm.models import build_model, image_input, model_variant
from smile_vlm.wise import start_head
from smile_vlm.optim import make_optimizer, make_scheduler
from smile_vlm.prompts import TextBank, build_text_bank
from smile_vlm.replay import Replay, load_replay
from smile_vlm.settings import resolve_settings
from smile_vlm.store import open_store
from smile_vlm.targets import FoldTargets

LOG = logging.getLogger(__name__)
# The split's stored images are read into memory once when they fit in this many MB (a 224-px
# BU-4DFE fold: ~100 MB), else decompressed every epoch. Speed only.
IMAGE_CACHE_MB = 2048
# Clean views (resized and normalised, Eq. 6 and 8's inputs) are the same every epoch: they are
# computed once per job when the whole split's fit in this many MB, else per step. Speed only.
CLEAN_CACHE_MB = 2048


def train_fold(store_path, folds_csv, repeat: int, fold: int, variant: dict, settings: dict | None,
               out_dir, *, on_epoch_end=None, text_bank_file=None, split: dict | None = None) -> Path:
    """Train one fold; returns ``out_dir/model.pt``. Resumes from ``out_dir/checkpoint.pt``.

    ``settings``: the sections of settings.resolve_settings. For a cross-dataset protocol (split
    "cross") ``store_path`` is the training store: the model learns ``protocol.train_classes`` from
    the fold's training subjects and never opens the test store. ``split`` (final.train_final)
    replaces the fold's split. ``on_epoch_end(epoch, record)`` runs after each epoch's checkpoint
    is on disk (tests use it to interrupt a run). ``text_bank_file``: the prompt embeddings of
    ``smile-vlm text-bank`` (else the text encoder is loaded here).
    """
    settings = resolve_settings(settings)
    variant = model_variant(variant, settings)
    settings = _with_init_digest(settings, variant)
    train = settings["train"]
    if settings["prompts"]["source"] not in ("label", "pseudo"):
        raise ValueError(f"prompts.source must be 'label' or 'pseudo', not {settings['prompts']['source']!r}")
    out_dir = Path(out_dir)
    final_path, checkpoint_path = out_dir / ckpt.MODEL_NAME, out_dir / ckpt.CHECKPOINT_NAME
    device, rank, world = runtime.prepare(train)
    if rank == 0:
        ckpt.remove_orphan_temp_files(out_dir)

    split = split or fold_samples(store_path, folds_csv, repeat, fold, settings["protocol"])
    if not len(split["train"]):
        # A cross-dataset fold trains on the training store; given the test store, nothing matches.
        raise ScanError(store_path, f"repeat {repeat} fold {fold} has no training sample in this store "
                                    f"(dataset {split['dataset']!r}); is it the fold's training store?")
    run = _build_run(store_path, split, variant, settings, text_bank_file, device, rank, world)
    start_epoch, history = ckpt.resume_or_start(checkpoint_path, settings, variant, run.model, run.optimizer,
                                                run.scheduler, run.scaler, write_log=rank == 0)
    if start_epoch >= train["epochs"] and final_path.exists():
        return final_path

    run_start = time.perf_counter()
    for epoch in range(start_epoch, train["epochs"]):
        record = train_epoch(run, epoch, history)
        history.append(record)
        if rank == 0:
            ckpt.save_checkpoint(checkpoint_path, epoch + 1, settings, variant, run.model, run.optimizer,
                                 run.scheduler, run.scaler, history)
            ckpt.write_log_file(out_dir / ckpt.LOG_NAME, history)
            _log_epoch(record, train["epochs"], (time.perf_counter() - run_start) / (epoch + 1 - start_epoch))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    if rank == 0:
        ckpt.save_model(final_path, run.model, variant, settings, _model_metadata(run, split, store_path, repeat, fold))
    if world > 1:
        dist.barrier()
    return final_path


@dataclass
class Run:
    """Everything one fold's epochs need, built once."""

    model: nn.Module
    loss_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    dataset: StoreDataset
    targets: FoldTargets
    text_bank: TextBank
    class_emb: torch.Tensor
    augmenter: Augmenter
    settings: dict
    device: torch.device
    rank: int
    world: int
    steps_per_epoch: int
    store_attrs: dict
    n_views: int
    clean_cache: torch.Tensor | None  # (N, V, 3, S, S) clean views in dataset order, or None
    position: dict  # store row -> position in the dataset
    replay: Replay | None = None  # the pretraining's corpus replayed every step (smile_vlm.replay)


def _build_run(store_path, split: dict, variant: dict, settings: dict, text_bank_file, device, rank: int,
               world: int) -> Run:
    train = settings["train"]
    classes = split["train_classes"]
    store_attrs = dict(open_store(store_path).attrs)
    multi_label = bool(store_attrs["multi_label"])
    dataset = StoreDataset(store_path, split["train"], label_mode="multi" if multi_label else "single")
    if not dataset.load_images(IMAGE_CACHE_MB):
        LOG.info("images of %d samples exceed %d MB: read from the store every epoch", len(dataset), IMAGE_CACHE_MB)
    text_bank = build_text_bank(settings, classes, text_bank_file)
    n_views = int(dataset[0]["images"].shape[0])
    replay = load_replay(variant, settings["encoders"].get("text"), n_views, int(train["seed"]))
    model = build_model(variant, n_views, int(text_bank.dim))
    start_head(model, variant)
    model = model.to(device)
    size, mean, std = image_input(model)
    optimizer = make_optimizer(model, train)
    steps_per_epoch = len(batches_for_epoch(len(dataset), train["batch_size"], torch.Generator(), rank, world))
    scheduler = make_scheduler(optimizer, train, steps_per_epoch)
    dtype = runtime.amp_dtype(train["amp"], device)
    augmenter = Augmenter(size, train["augment"], mean, std)
    clean_cache = None
    if train["align_on"] == "clean":
        clean_cache = clean_view_cache(dataset, augmenter, device, n_views)
    return Run(model=model, loss_module=runtime.wrap_ddp(_LossModule(model, replay), device, world), optimizer=optimizer,
               scheduler=scheduler, scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
               dtype=dtype, dataset=dataset, targets=FoldTargets(split["store_classes"], classes, multi_label),
               text_bank=text_bank, class_emb=text_bank.class_embeddings().to(device),
               augmenter=augmenter, settings=settings, device=device,
               rank=rank, world=world, steps_per_epoch=steps_per_epoch, store_attrs=store_attrs,
               n_views=n_views, clean_cache=clean_cache,
               position={int(row): i for i, row in enumerate(dataset.indices)}, replay=replay)


def train_epoch(run: Run, epoch: int, history: list[dict]) -> dict:
    """One pass over the fold's training split; returns the epoch's log record (step records
    of ``train.log_every`` go to ``history``)."""
    train = run.settings["train"]
    # Worker processes would only copy samples that are already in memory.
    workers = 0 if run.dataset.in_memory else int(train["workers"])
    pseudo = None
    if run.settings["prompts"]["source"] == "pseudo":
        pseudo = zero_shot_predictions(run.model, run.dataset, run.augmenter, run.class_emb, run.device,
                                       train["batch_size"], workers)
    run.model.train()
    augment_generator = runtime.epoch_generator(train["seed"], epoch, 1, run.rank)
    replay_generator = runtime.epoch_generator(train["seed"], epoch, 2, run.rank) if run.replay else None
    batches = batches_for_epoch(len(run.dataset), train["batch_size"], runtime.epoch_generator(train["seed"], epoch, 0),
                                run.rank, run.world)
    loader = iter(torch.utils.data.DataLoader(run.dataset, batch_sampler=batches, num_workers=workers))
    sums: dict[str, float] = {}
    samples, wait_seconds, epoch_start, lr = 0, 0.0, time.perf_counter(), 0.0
    bar = runtime.progress_bar(len(batches), f"epoch {epoch + 1}/{train['epochs']}",
                               runtime.progress_enabled(train["progress"]) and run.rank == 0)
    for step_in_epoch in range(len(batches)):
        wait_start = time.perf_counter()
        batch = next(loader)
        wait_seconds += time.perf_counter() - wait_start
        pseudo_classes = None
        if pseudo is not None:
            batch = _without_labels(batch)
            pseudo_classes = pseudo[[run.position[int(row)] for row in batch["index"]]]
        lr, terms = train_step(run, batch, augment_generator, pseudo_classes, replay_generator)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        samples += len(batch["images"])
        step = epoch * run.steps_per_epoch + step_in_epoch + 1
        if train["log_every"] and step % train["log_every"] == 0:
            history.append({"kind": "step", "epoch": epoch, "step": step, "lr": lr, **terms})
        bar.update(1)
        bar.set_postfix(loss=f"{terms.get('total', float('nan')):.4f}")
    bar.close()
    elapsed = time.perf_counter() - epoch_start
    return {"kind": "epoch", "epoch": epoch, "step": (epoch + 1) * run.steps_per_epoch, "lr": lr,
            **{name: value / len(batches) for name, value in sums.items()},
            "samples_per_s": samples * run.world / elapsed,
            "loader_samples_per_s": samples / wait_seconds if wait_seconds > 0 else None, "seconds": elapsed}


def train_step(run: Run, batch: dict, generator: torch.Generator, pseudo_classes: torch.Tensor | None = None,
               replay_generator: torch.Generator | None = None) -> tuple[float, dict[str, float]]:
    """Eq. 10 (or FACET-VLM's objective) on one batch and one optimizer step; returns (lr, loss terms).

    Each sample's prompt comes from its class (a random positive one when multi-label), or from
    ``pseudo_classes``, the model's own zero-shot classes in pseudo mode. ``generator`` draws, in
    this order, the two augmentations, the multi-label prompt classes and the prompts;
    ``replay_generator`` the replayed corpus samples (``run.replay``), as many as the batch holds.
    """
    images = batch["images"]
    views_a, views_b = run.augmenter.two_views(images, generator, run.device)
    clean = None
    if run.clean_cache is not None:
        clean = run.clean_cache[[run.position[int(row)] for row in batch["index"]]]
        # Augmenter.clean's layout (channels last, from the store's HWC images): the convolutions
        # then take the same code path, and the weights are bit-identical to resizing every step.
        clean = clean.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(clean.shape)
    elif run.settings["train"]["align_on"] == "clean":
        clean = run.augmenter.clean(images, run.device)
    if pseudo_classes is None:
        prompt_classes, labels = run.targets.prompt_classes(batch, generator), run.targets.labels(batch)
    else:
        prompt_classes, labels = pseudo_classes, run.targets.pseudo_labels(pseudo_classes)
    labels = labels.to(run.device)
    text_emb = run.text_bank.sample(prompt_classes, generator).to(run.device)
    if run.world > 1:
        # Eq. 1, 6, 8 are statistics of the whole batch: see runtime.global_batch.
        text_emb, labels = runtime.gather_across_ranks(text_emb), runtime.gather_across_ranks(labels)
    replayed = None
    if run.replay is not None:
        index = run.replay.draw(len(images), replay_generator)
        clean_replayed = run.augmenter.clean(run.replay.images[index], run.device)
        if run.world > 1:  # every rank keeps the same subset; the embeddings come back gathered
            index = runtime.gather_across_ranks(index.to(run.device)).cpu()
        replayed = (clean_replayed, index)
    with runtime.global_batch(run.model, run.world > 1), \
            torch.autocast(run.device.type, dtype=run.dtype or torch.float32, enabled=run.dtype is not None):
        losses = run.loss_module(views_a, views_b, clean, text_emb, run.class_emb, labels, replayed)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(losses["total"]).backward()
    if run.settings["train"]["grad_clip"]:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.settings["train"]["grad_clip"])
    run.scaler.step(run.optimizer)
    run.scaler.update()
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    return lr, {name: float(value.detach()) for name, value in losses.items()
                if torch.is_tensor(value) and value.dim() == 0}


class _LossModule(nn.Module):
    """Routes model.training_losses (and the replayed terms) through forward(), so DDP sees the
    call that builds the graph."""

    def __init__(self, model: nn.Module, replay: Replay | None = None):
        super().__init__()
        self.model = model
        self.replay = replay

    def forward(self, views_a, views_b, clean_views, text_emb, class_emb, labels, replayed=None):
        losses = self.model.training_losses(views_a, views_b, clean_views, text_emb, class_emb, labels)
        if replayed is None:
            return losses
        terms = self.replay.losses(self.model, *replayed, class_emb)
        return {**losses, **terms, "total": losses["total"] + self.replay.weight * terms["replay"]}


def batches_for_epoch(n_samples: int, batch_size: int, generator: torch.Generator,
                      rank: int = 0, world: int = 1) -> list[list[int]]:
    """Shuffled dataset positions cut into full global batches; each rank takes its slice.

    Dropping the partial last batch keeps every batch >= 2 samples, which batch standardisation
    (Eq. 1, 8) needs. A split smaller than one batch trains on one batch of all its samples.
    """
    order = torch.randperm(n_samples, generator=generator).tolist()
    size = min(batch_size, n_samples)
    if size < 2 * world:
        raise ValueError(f"a training split of {n_samples} samples is too small for batches across {world} ranks")
    per_rank = size // world
    return [order[start:start + size][rank * per_rank:(rank + 1) * per_rank]
            for start in range(0, n_samples - size + 1, size)]


@torch.no_grad()
def clean_view_cache(dataset, augmenter: Augmenter, device: torch.device, n_views: int) -> torch.Tensor | None:
    """Every sample's clean views in dataset order (resizing per image gives the same values in any
    batch), or None when they exceed CLEAN_CACHE_MB."""
    size = len(dataset) * n_views * 3 * augmenter.size ** 2 * 4
    if size > CLEAN_CACHE_MB * 2**20:
        LOG.info("clean views of %d samples (%.0f MB) exceed %d MB: resized every step", len(dataset), size / 2**20,
                 CLEAN_CACHE_MB)
        return None
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=False)
    return torch.cat([augmenter.clean(batch["images"], device) for batch in loader])


@torch.no_grad()
def zero_shot_predictions(model: nn.Module, dataset, augmenter: Augmenter, class_emb: torch.Tensor,
                          device: torch.device, batch_size: int, num_workers: int = 0) -> torch.Tensor:
    """argmax_k of model.class_scores for every sample of ``dataset`` (in dataset order)."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    predictions = [model.class_scores(augmenter.clean(batch["images"], device), class_emb).argmax(dim=1).cpu()
                   for batch in loader]
    model.train(was_training)
    return torch.cat(predictions)


def _with_init_digest(settings: dict, variant: dict) -> dict:
    """A vision.pt rebuilt at the same path is another recipe: its digest joins the settings the
    checkpoint is compared with, so the fold starts over instead of resuming the old weights."""
    init = (variant.get("vision") or {}).get("init")
    if init and Path(init).is_file():
        return {**settings, "vision_init_sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest()}
    return settings


def _without_labels(batch: dict) -> dict:
    """A batch with its true labels removed: in pseudo mode nothing downstream can read them."""
    return {key: value for key, value in batch.items() if key not in ("label", "labels")}


def _model_metadata(run: Run, split: dict, store_path, repeat: int, fold: int) -> dict:
    """What travels with the weights: evaluation refuses another fold's, experiment's or store's
    model with it, and a cross-dataset evaluation reads the training store for its linear probe."""
    return {"classes": split["train_classes"], "n_views": run.n_views,
            "text_dim": int(run.text_bank.dim), "epochs": run.settings["train"]["epochs"],
            "repeat": int(repeat), "fold": int(fold), "experiment": run.settings["experiment"],
            "train_store": str(store_path), "train_dataset": split["dataset"],
            "store_settings_hash": str(run.store_attrs["settings_hash"]),
            "train_subjects": [str(s) for s in split["train_subjects"]],
            "views": json.loads(json.dumps(list(run.store_attrs["views"]))),
            "multi_label": bool(run.store_attrs["multi_label"]), "n_train": int(len(run.dataset))}


def _log_epoch(record: dict, epochs: int, seconds_per_epoch: float) -> None:
    """One progress line per epoch on the job's log (stderr under Snakemake)."""
    skip = {"kind", "epoch", "step", "lr", "samples_per_s", "loader_samples_per_s", "seconds"}
    terms = " ".join(f"{name} {value:.4f}" for name, value in record.items()
                     if name not in skip and isinstance(value, float))
    remaining = int(round((epochs - record["epoch"] - 1) * seconds_per_epoch))
    LOG.info("epoch %d/%d: %s | lr %.3g | %.1f samples/s | %.1f s | ETA %d:%02d:%02d", record["epoch"] + 1, epochs,
             terms, record["lr"], record["samples_per_s"], record["seconds"],
             remaining // 3600, remaining // 60 % 60, remaining % 60)
