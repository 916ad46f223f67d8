"""Training of one fold of SMILE-VLM (or FACET-VLM, through the same model interface).

Recipe (SMILE-VLM §III-D): frozen text encoder, trainable vision side, Adam(W) with lr 1e-4 and
weight decay; here with a linear warmup and a cosine decay per step, AMP on CUDA only.

Single process (default)::

    python -m smile_vlm.train --store store.zarr --folds folds.csv --repeat 0 --fold 3 \
        --variant-json '{"model": "smile_vlm"}' --settings-json '{"train": {"epochs": 30}}' --out runs/r0f3

Several GPUs (same arguments; DDP starts when WORLD_SIZE > 1)::

    torchrun --nproc_per_node 4 -m smile_vlm.train --store ... --out runs/r0f3

Every epoch writes ``out/checkpoint.pt`` atomically; a rerun with the same arguments resumes from
it and reaches the same weights as an uninterrupted run (per-epoch seeded data order and
augmentations, restored RNG states). A checkpoint of another recipe is not resumed: the fold
starts over (the log says so). ``out/model.pt`` is written last; ``out/train_log.jsonl``
holds one line per logged step and per epoch.

Prompt sources (``settings["prompts"]["source"]``):

* ``"label"`` (the paper, §II-A/§III-C): each sample's text is a prompt drawn from its own class.
  The paper calls this self-supervised because the prompts are soft descriptions, but the class
  of the prompt *is* the sample's label, so this is label information entering training.
* ``"pseudo"``: no labels at all. Each epoch starts by scoring the training samples zero-shot with
  the current model (argmax of ``class_scores`` against the prompt-ensembled class embeddings)
  and draws prompts from those pseudo-classes. The true labels are removed from every batch
  before anything else sees it (``_without_labels``), and the ``labels`` argument of the losses
  is the pseudo-label (FACET-VLM's cross-entropy then trains on the pseudo-labels); only the
  protocol's sample filter (which subjects and classes form the dataset) reads the store's
  labels. With the compact CNN trained from scratch the first epoch's pseudo-labels are chance
  (random features), so this only works when the vision tower starts from aligned CLIP weights
  or when mv-bt alone first shapes the features; expect near-chance accuracy otherwise.

DDP and the batch statistics: mv-bt and red-min (Eq. 1, 8) standardise each embedding dimension
over the batch and divide by B. Under DDP every rank only sees B / world samples, so the loss of
the global batch needs the correlation matrices summed over ranks (the Barlow Twins reference
all-reduces ``c``). We gather the embeddings of all ranks with a differentiable all-gather before
the losses (``gather_across_ranks``), which gives exactly the single-process loss of the global
batch, including the InfoNCE negatives of Eq. 6; see ``_global_batch``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from smile_vlm import atomic
from smile_vlm.augment import Augmenter
from smile_vlm.errors import ScanError
from smile_vlm.folds import class_index_map, fold_of, fold_samples, read_folds

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
LOG_NAME = "train_log.jsonl"
CHECKPOINT_FORMAT = 2  # 2: the checkpoint carries the training log (``history``)
AMP_SETTINGS = ("auto", "bf16", "fp16", "off")

DEFAULT_TRAIN = {
    "epochs": 30,  # passes over the fold's training split
    "batch_size": 32,  # global batch (split over ranks under DDP); the last partial batch is dropped
    "lr": 1e-4,  # peak learning rate (paper §III-D)
    "weight_decay": 0.05,  # AdamW decoupled weight decay; the paper gives no value, 0.05 is ours
    "betas": [0.9, 0.999],
    "warmup_epochs": 1.0,  # linear warmup from 0, then cosine decay to min_lr_ratio * lr
    "min_lr_ratio": 0.0,
    "grad_clip": 0.0,  # max global gradient norm; 0 disables clipping
    "seed": 0,  # weights, data order, augmentations, prompt draws
    "device": "auto",  # "auto" = cuda when available, else cpu; or "cpu", "cuda", "cuda:N"
    # "auto": CUDA bf16 where supported, else fp16; CPU bf16 where oneDNN runs it natively
    # (AVX-512), else full precision | "bf16" | "fp16" (CUDA only) | "off"
    "amp": "auto",
    "threads": 0,  # torch.set_num_threads; 0 leaves torch's default
    "workers": 0,  # DataLoader worker processes reading the store
    "gpus": 0,  # read by the launcher (torchrun when > 1); training follows WORLD_SIZE
    "deterministic": True,  # torch.use_deterministic_algorithms(warn_only=True)
    "progress": "auto",  # tqdm bar: "auto" = only on a TTY, or true/false
    "log_every": 0,  # also log every N steps (0: one line per epoch only)
    "augment": {},  # overrides of augment.DEFAULT_AUGMENT
    # Views the alignment terms (Eq. 6, 8) see: "clean" (resized and normalised only) or
    # "augmented" (augmentation A, one forward pass fewer). On the synthetic BU-4DFE default,
    # clean scored higher (see BENCHMARKS.md).
    "align_on": "clean",
}
DEFAULT_PROMPTS = {
    "name": "emotions",  # prompt file smile_vlm/prompts/<name>.yaml
    "source": "label",  # "label" (the paper) or "pseudo" (no labels; see the module doc)
}
# Top-level settings sections; train_fold and evaluate_fold take the same dict. ``experiment`` is
# the experiment's name: it travels with the weights so that evaluation can refuse another one's.
SECTIONS = {"train", "encoders", "prompts", "classes", "protocol", "evaluate", "experiment"}

LOG = logging.getLogger(__name__)

# Keys that change how a run executes but not what it computes: a resume may change them.
RUNTIME_KEYS = {"device", "threads", "workers", "gpus", "progress", "log_every"}


def resolve_settings(settings: dict | None) -> dict:
    """Defaults filled in, unknown keys refused, primitive containers only (fit in a checkpoint).

    ``classes`` (the experiment's class set) overrides ``protocol.classes`` for the sample filter.
    """
    settings = json.loads(json.dumps(settings or {}))
    unknown = set(settings) - SECTIONS
    if unknown:
        raise ValueError(f"unknown settings sections {sorted(unknown)} (known: {sorted(SECTIONS)})")
    for name, section, defaults in (("train", "train", DEFAULT_TRAIN), ("prompts", "prompts", DEFAULT_PROMPTS)):
        extra = set(settings.get(section, {})) - set(defaults)
        if extra:
            raise ValueError(f"unknown {name} settings {sorted(extra)}")
    protocol = dict(settings.get("protocol") or {})
    if settings.get("classes"):
        protocol["classes"] = list(settings["classes"])
    return {
        "train": {**DEFAULT_TRAIN, **settings.get("train", {})},
        "prompts": {**DEFAULT_PROMPTS, **settings.get("prompts", {})},
        "encoders": settings.get("encoders") or {},
        "protocol": protocol,
        "evaluate": settings.get("evaluate") or {},
        "experiment": settings.get("experiment"),
    }


# --------------------------------------------------------------------------- devices, seeds, DDP

def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bfloat16 convolutions and matmuls in hardware (AVX-512 and newer).

    There, bf16 autocast makes a compact-CNN step about 1.7x faster (BENCHMARKS.md). Elsewhere
    oneDNN would emulate bf16, which we have not measured and do not expect to pay off, so those
    CPUs keep float32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. The losses always run in float32
    (losses.full_precision), so only the encoders' matmuls and convolutions change precision."""
    if setting not in AMP_SETTINGS:
        raise ValueError(f"train.amp must be one of {AMP_SETTINGS}, got {setting!r}")
    if setting == "off":
        return None
    if device.type == "cuda":
        if setting == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]
    if device.type == "cpu" and (setting == "bf16" or (setting == "auto" and cpu_has_fast_bf16())):
        return torch.bfloat16
    return None  # fp16 autocast is CUDA only


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int, rank: int = 0) -> torch.Generator:
    """An independent CPU generator per (seed, epoch, stream, rank): data order and augmentations
    of epoch e never depend on how many epochs ran before in this process, which makes resume exact."""
    mixed = np.random.SeedSequence([seed, epoch, stream, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


def rng_state() -> dict:
    """All global RNG states as tensors and primitives (loadable with weights_only=True)."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group when torchrun set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a batch-first tensor over ranks, keeping gradients to every rank's slice."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


# --------------------------------------------------------------------------- model and text

def image_input(model: nn.Module) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) the model's vision encoder expects (encoders.ImageInput)."""
    for module in model.modules():
        if all(hasattr(module, name) for name in ("input_size", "mean", "std")):
            return int(module.input_size), tuple(module.mean), tuple(module.std)
    raise ValueError("the model has no vision encoder exposing input_size, mean and std")


def model_variant(variant: dict, settings: dict) -> dict:
    """The dict build_model takes: the workflow's ``model`` key names the architecture, and the
    vision encoder spec comes from the ``encoders`` section (``image_size`` is the encoder's
    ``input_size``)."""
    variant = dict(variant or {})
    if "model" in variant:
        variant["name"] = variant.pop("model")
    vision = dict(settings["encoders"].get("vision") or {})
    if "image_size" in vision:
        vision.setdefault("input_size", vision.pop("image_size"))
    if vision:
        variant["vision"] = {**variant.get("vision", {}), **vision}
    return variant


def text_bank_about(settings: dict) -> dict:
    """What a prompt bank depends on: the frozen text encoder and the prompt set."""
    return {"text_encoder": settings["encoders"].get("text"), "prompts": str(settings["prompts"]["name"])}


def build_text_bank(settings: dict, classes: list[str], bank_file=None):
    """The prompt bank of ``classes``: read from ``bank_file`` (``smile-vlm text-bank``) when given,
    else embedded here once for the whole run with the frozen text encoder."""
    from smile_vlm.prompts import TextBank, load_prompts

    prompts = load_prompts(settings["prompts"]["name"], classes)
    if bank_file:
        return TextBank.load(bank_file, text_bank_about(settings), prompts)
    from smile_vlm.encoders import load_text_encoder

    return TextBank(load_text_encoder(settings["encoders"].get("text")), prompts, classes)


def write_text_bank(settings: dict, out_path) -> None:
    """Embed every class of the prompt set once, for all the jobs of a workflow (rule text_bank)."""
    from smile_vlm.prompts import load_prompts

    settings = resolve_settings(settings)
    classes = list(load_prompts(settings["prompts"]["name"]))
    build_text_bank(settings, classes).save(out_path, text_bank_about(settings))


def build_fold_model(variant: dict, n_views: int, text_dim: int) -> nn.Module:
    from smile_vlm.model import build_model

    return build_model(variant, n_views, text_dim)


class _LossModule(nn.Module):
    """Routes model.training_losses through forward(), so DDP sees the call that builds the graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, views_a, views_b, clean_views, text_emb, class_emb, labels, loss_overrides):
        return self.model.training_losses(views_a, views_b, clean_views, text_emb, class_emb, labels, loss_overrides)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then half a cosine down to ``min_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, settings: dict) -> torch.optim.Optimizer:
    """AdamW; biases and normalisation parameters (ndim <= 1) get no weight decay (as Barlow Twins)."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in trainable if p.ndim > 1]
    no_decay = [p for _, p in trainable if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": settings["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings["lr"], betas=tuple(settings["betas"]))


# --------------------------------------------------------------------------- data

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


def _loader(dataset, batches: list[list[int]], workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=int(workers))


class FoldTargets:
    """Store labels mapped onto the protocol's class indices (store may hold more classes)."""

    def __init__(self, store_classes: list[str], classes: list[str], multi_label: bool):
        self.map = torch.from_numpy(class_index_map(store_classes, classes))
        self.columns = torch.tensor([store_classes.index(name) for name in classes])
        self.multi_label = multi_label

    def single(self, label: torch.Tensor) -> torch.Tensor:
        return self.map[label]

    def multi(self, labels: torch.Tensor) -> torch.Tensor:
        return labels[:, self.columns]

    def labels(self, batch: dict) -> torch.Tensor:
        return self.multi(batch["labels"]) if self.multi_label else self.single(batch["label"])

    def pseudo_labels(self, classes: torch.Tensor) -> torch.Tensor:
        """The losses' ``labels`` argument in pseudo mode: the pseudo-classes, in the shape of the
        true targets (class indices, or one-hot rows for a multi-label store)."""
        if not self.multi_label:
            return classes
        return torch.nn.functional.one_hot(classes.long(), len(self.columns)).float()

    def prompt_classes(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """One class per sample to draw its prompt from: its label, or a random positive (multi-label)."""
        if not self.multi_label:
            return self.single(batch["label"])
        positives = self.multi(batch["labels"])
        scores = torch.rand(positives.shape, generator=generator) * positives
        return scores.argmax(dim=1)


# --------------------------------------------------------------------------- training

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


def train_fold(store_path, folds_csv, repeat: int, fold: int, variant: dict, settings: dict | None,
               out_dir, *, on_epoch_end=None, text_bank_file=None, split: dict | None = None) -> Path:
    """Train one fold; returns ``out_dir/model.pt``. Resumes from ``out_dir/checkpoint.pt``.

    ``settings`` has the sections ``train`` (DEFAULT_TRAIN), ``prompts`` (DEFAULT_PROMPTS),
    ``encoders`` ({"text": spec, "vision": spec}), ``classes`` and ``protocol`` (which samples of the
    fold's subjects are used, folds.sample_filter). For a cross-dataset protocol (split "cross")
    ``store_path`` is the training store: the model learns ``protocol.train_classes`` (null: all the
    store's classes) from the fold's training subjects, and never opens the test store. ``on_epoch_end(epoch, record)`` is called after
    each epoch's checkpoint is on disk (tests use it to interrupt a run). ``text_bank_file``: the
    prompt embeddings written by ``write_text_bank`` (else the text encoder is loaded here).
    """
    settings = resolve_settings(settings)
    train = settings["train"]
    variant = model_variant(variant, settings)
    init = (variant.get("vision") or {}).get("init")
    if init and Path(init).is_file():
        # A vision.pt rebuilt at the same path is another recipe: its digest joins the settings the
        # checkpoint is compared with, so the fold starts over instead of resuming the old weights.
        settings = {**settings, "vision_init_sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest()}
    out_dir = Path(out_dir)
    final_path, checkpoint_path, log_path = out_dir / MODEL_NAME, out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    pseudo_mode = settings["prompts"]["source"] == "pseudo"
    if settings["prompts"]["source"] not in ("label", "pseudo"):
        raise ValueError(f"prompts.source must be 'label' or 'pseudo', not {settings['prompts']['source']!r}")

    rank, world, local_rank = distributed_context()
    device = select_device(train["device"])
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if train["threads"]:
        torch.set_num_threads(int(train["threads"]))
    if train["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    seed_everything(train["seed"])
    if rank == 0:
        remove_orphan_temp_files(out_dir)

    from smile_vlm.store import StoreDataset, open_store

    if split is None:  # final.train_final passes the all-subjects split of a deployable model
        split = fold_samples(store_path, folds_csv, repeat, fold, settings["protocol"])
    if not len(split["train"]):
        # A cross-dataset fold trains on the training store; given the test store, nothing matches.
        raise ScanError(store_path, f"repeat {repeat} fold {fold} has no training sample in this store "
                                    f"(dataset {split['dataset']!r}); is it the fold's training store?")
    classes = split["train_classes"]
    store_attrs = open_store(store_path).attrs
    multi_label = bool(store_attrs["multi_label"])
    targets = FoldTargets(split["store_classes"], classes, multi_label)
    dataset = StoreDataset(store_path, split["train"], label_mode="multi" if multi_label else "single")
    n_views = int(dataset[0]["images"].shape[0])

    text_bank = build_text_bank(settings, classes, text_bank_file)
    class_emb = text_bank.class_embeddings().to(device)
    model = build_fold_model(variant, n_views, int(text_bank.dim)).to(device)
    size, mean, std = image_input(model)
    augmenter = Augmenter(size, train["augment"], mean, std)

    optimizer = make_optimizer(model, train)
    steps_per_epoch = len(batches_for_epoch(len(dataset), train["batch_size"], torch.Generator(), rank, world))
    total_steps = steps_per_epoch * train["epochs"]
    warmup_steps = int(round(train["warmup_epochs"] * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, train["min_lr_ratio"]))
    dtype = amp_dtype(train["amp"], device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    start_epoch, log = 0, []
    if checkpoint_path.exists():
        try:
            start_epoch, log = _resume(checkpoint_path, settings, variant, model, optimizer, scheduler, scaler)
        except StaleCheckpoint as stale:
            # Snakemake reruns a fold whose recipe changed (params:); the old recipe's checkpoint
            # is of no use to it, and refusing would turn every such change into a manual cleanup.
            LOG.warning("%s; starting this fold over", stale)
        else:
            if rank == 0:
                # The checkpoint's history is the log of record: a kill between the checkpoint
                # and the log write (or during the log write) loses no line.
                atomic.write_text(log_path, "".join(json.dumps(r) + "\n" for r in log))
            if start_epoch >= train["epochs"] and final_path.exists():
                return final_path

    loss_module: nn.Module = _LossModule(model)
    if world > 1:
        if device.type == "cuda":
            loss_module = nn.SyncBatchNorm.convert_sync_batchnorm(loss_module)
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    progress = _progress_enabled(train["progress"]) and rank == 0
    position = {int(row): i for i, row in enumerate(dataset.indices)}

    run_start = time.perf_counter()
    for epoch in range(start_epoch, train["epochs"]):
        pseudo = None
        if pseudo_mode:
            pseudo = zero_shot_predictions(model, dataset, augmenter, class_emb, device,
                                           train["batch_size"], train["workers"])
        model.train()
        order_generator = epoch_generator(train["seed"], epoch, 0)
        augment_generator = epoch_generator(train["seed"], epoch, 1, rank)
        batches = batches_for_epoch(len(dataset), train["batch_size"], order_generator, rank, world)
        loader = iter(_loader(dataset, batches, train["workers"]))
        sums: dict[str, float] = {}
        samples, wait_seconds, epoch_start = 0, 0.0, time.perf_counter()
        bar = _bar(len(batches), f"epoch {epoch + 1}/{train['epochs']}", progress)
        for step_in_epoch in range(len(batches)):
            wait_start = time.perf_counter()
            batch = next(loader)
            wait_seconds += time.perf_counter() - wait_start
            if pseudo_mode:
                batch = _without_labels(batch)

            images = batch["images"]
            views_a, views_b = augmenter.two_views(images, augment_generator, device)
            clean = augmenter.clean(images, device) if train["align_on"] == "clean" else None
            if pseudo is None:
                prompt_classes = targets.prompt_classes(batch, augment_generator)
                labels = targets.labels(batch).to(device)
            else:
                prompt_classes = pseudo[[position[int(row)] for row in batch["index"]]]
                labels = targets.pseudo_labels(prompt_classes).to(device)
            text_emb = text_bank.sample(prompt_classes, augment_generator).to(device)
            if world > 1:
                # Eq. 1, 6, 8 are statistics of the whole batch: see _global_batch.
                text_emb, labels = gather_across_ranks(text_emb), gather_across_ranks(labels)

            with _global_batch(model, world > 1), \
                    torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                losses = loss_module(views_a, views_b, clean, text_emb, class_emb, labels, {})
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            if train["grad_clip"]:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), train["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()

            terms = {name: float(value.detach()) for name, value in losses.items()
                     if torch.is_tensor(value) and value.dim() == 0}
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            samples += len(images)
            step = epoch * steps_per_epoch + step_in_epoch + 1
            if train["log_every"] and step % train["log_every"] == 0:
                log.append({"kind": "step", "epoch": epoch, "step": step, "lr": lr, **terms})
            bar.update(1)
            bar.set_postfix(loss=f"{terms.get('total', float('nan')):.4f}")
        bar.close()

        elapsed = time.perf_counter() - epoch_start
        record = {"kind": "epoch", "epoch": epoch, "step": (epoch + 1) * steps_per_epoch, "lr": lr,
                  **{name: value / len(batches) for name, value in sums.items()},
                  "samples_per_s": samples * world / elapsed,
                  "loader_samples_per_s": samples / wait_seconds if wait_seconds > 0 else None,
                  "seconds": elapsed}
        log.append(record)
        if rank == 0:
            _save_checkpoint(checkpoint_path, epoch + 1, settings, variant, model, optimizer, scheduler, scaler, log)
            atomic.write_text(log_path, "".join(json.dumps(r) + "\n" for r in log))
            _log_epoch(record, train["epochs"], (time.perf_counter() - run_start) / (epoch + 1 - start_epoch))
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    if rank == 0:
        # The training store's identity travels with the weights: a cross-dataset evaluation reads
        # it for the linear probe and checks that the test store was rendered with the same views.
        final = {"model": model.state_dict(), "variant": variant, "settings": settings, "classes": classes,
                 "n_views": n_views, "text_dim": int(text_bank.dim), "epochs": train["epochs"],
                 "repeat": int(repeat), "fold": int(fold), "experiment": settings["experiment"],
                 "train_store": str(store_path), "train_dataset": split["dataset"],
                 "store_settings_hash": str(store_attrs["settings_hash"]),
                 "train_subjects": [str(s) for s in split["train_subjects"]],
                 "views": json.loads(json.dumps(list(store_attrs["views"]))),
                 "multi_label": multi_label, "n_train": int(len(dataset))}
        with atomic.atomic_path(final_path) as tmp:
            torch.save(final, tmp)
    if world > 1:
        dist.barrier()
    return final_path


class _global_batch:
    """Under DDP, make model.encode_views return the embeddings of every rank's batch.

    The losses (Eq. 1-10) then see the global batch: batch standardisation, the correlation
    matrices (the Barlow Twins reference all-reduces its c) and the InfoNCE negatives are those of
    the single-process run. The gather is differentiable; each rank backpropagates the same loss
    into its own slice, and all_gather's backward sums those gradients over ranks, so after DDP's
    gradient averaging every parameter gets exactly the single-process gradient. Fusion runs on
    the gathered embeddings too, so text_emb and labels are gathered by the caller.
    """

    def __init__(self, model: nn.Module, enabled: bool):
        self.model, self.enabled = model, enabled

    def __enter__(self):
        if self.enabled:
            local = self.model.encode_views
            self.model.encode_views = lambda images: gather_across_ranks(local(images))
        return self

    def __exit__(self, *exc):
        if self.enabled:
            del self.model.encode_views  # back to the class method
        return False


def _without_labels(batch: dict) -> dict:
    """A batch with its true labels removed: in pseudo mode nothing downstream can read them."""
    return {key: value for key, value in batch.items() if key not in ("label", "labels")}


def _log_epoch(record: dict, epochs: int, seconds_per_epoch: float) -> None:
    """One progress line per epoch on the job's log (stderr under Snakemake)."""
    skip = {"kind", "epoch", "step", "lr", "samples_per_s", "loader_samples_per_s", "seconds"}
    terms = " ".join(f"{name} {value:.4f}" for name, value in record.items()
                     if name not in skip and isinstance(value, float))
    remaining = (epochs - record["epoch"] - 1) * seconds_per_epoch
    LOG.info("epoch %d/%d: %s | lr %.3g | %.1f samples/s | %.1f s | ETA %s", record["epoch"] + 1, epochs, terms,
             record["lr"], record["samples_per_s"], record["seconds"], _duration(remaining))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def remove_orphan_temp_files(out_dir: Path) -> list[Path]:
    """Delete the ``.<name>.tmp-*`` siblings (atomic.atomic_path) that a killed save left behind.

    Only one job writes a run folder (Snakemake locks its outputs), so a temp file that exists
    when the job starts belongs to a dead writer.
    """
    removed = []
    for name in (CHECKPOINT_NAME, MODEL_NAME, LOG_NAME):
        for orphan in Path(out_dir).glob(f".{name}.tmp-*"):
            if orphan.is_dir() and not orphan.is_symlink():
                import shutil

                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)
            LOG.info("removed %s, left by an interrupted save", orphan)
            removed.append(orphan)
    return removed


def _save_checkpoint(path: Path, epochs_done: int, settings, variant, model, optimizer, scheduler, scaler,
                     history: list[dict]) -> None:
    state = {"format": CHECKPOINT_FORMAT, "epoch": epochs_done, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "rng": rng_state(), "settings": settings, "variant": variant,
             "history": list(history)}
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


class StaleCheckpoint(ScanError):
    """A checkpoint of another recipe or format: nothing of it is loaded, the fold starts over."""


def _resume(path: Path, settings: dict, variant: dict, model, optimizer, scheduler, scaler) -> tuple[int, list]:
    """Load a checkpoint written with the same recipe; returns (finished epochs, log history).

    Raises StaleCheckpoint, before loading anything, when the recipe or the format differs.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise StaleCheckpoint(path, f"checkpoint format {state.get('format')} is not {CHECKPOINT_FORMAT}")
    changed = [f"train.{key}" for key in settings["train"] if key not in RUNTIME_KEYS
               and state["settings"]["train"].get(key) != settings["train"][key]]
    changed += [key for key in settings if key not in ("train", "evaluate")
                and state["settings"].get(key) != settings[key]]
    changed += ["variant"] if state["variant"] != variant else []
    if changed:
        raise StaleCheckpoint(path, f"written with different settings ({', '.join(sorted(changed))})")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["epoch"]), list(state["history"])


def _progress_enabled(setting) -> bool:
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


def _bar(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False, dynamic_ncols=True)


def load_trained(model_path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model written by train_fold (model.pt) and return it with the saved metadata."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    variant = dict(state["variant"])
    if (variant.get("vision") or {}).get("init"):
        # The saved weights replace the pretrained start, so the vision.pt need not exist here.
        variant["vision"] = {k: v for k, v in variant["vision"].items() if k != "init"}
    model = build_fold_model(variant, int(state["n_views"]), int(state["text_dim"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smile_vlm.train", description="train one fold")
    parser.add_argument("--store", required=True, metavar="ZARR", help="packed store (store.zarr)")
    parser.add_argument("--folds", required=True, metavar="CSV", help="folds table from `smile-vlm folds`")
    parser.add_argument("--repeat", type=int, default=0, help="repetition of the fold assignment")
    parser.add_argument("--fold", type=int, help="fold whose test subjects are held out")
    parser.add_argument("--k", type=int, help="job number of the folds table (instead of --repeat/--fold)")
    parser.add_argument("--variant-json", "--variant", dest="variant", type=json.loads, default={},
                        metavar="JSON", help='model variant, e.g. {"model": "smile_vlm"}')
    parser.add_argument("--settings-json", "--settings", dest="settings", type=json.loads, default={},
                        metavar="JSON", help="settings sections train/prompts/encoders/classes/protocol")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder: checkpoint, log, model.pt")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (overrides train.threads; the workflow passes the job's threads)")
    parser.add_argument("--text-bank", default=None, metavar="PT",
                        help="prompt embeddings from `smile-vlm text-bank` (else the text encoder is loaded)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # `python -m smile_vlm.train` (torchrun) has no CLI to set up logging; a no-op under `smile-vlm`.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (args.k is None) == (args.fold is None):
        parser.error("give either --k or --fold (with --repeat)")
    repeat, fold = (args.repeat, args.fold) if args.k is None else fold_of(read_folds(args.folds), args.k)
    if args.threads is not None:
        args.settings.setdefault("train", {})["threads"] = args.threads
    path = train_fold(args.store, args.folds, repeat, fold, args.variant, args.settings, args.out,
                      text_bank_file=args.text_bank)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
