"""A training run's folder: the resumable checkpoint, the training log and the final model.pt.

Every write is atomic (atomic.py). A checkpoint is resumed only when it was written with the same
recipe (everything but the runtime keys); otherwise the fold starts over.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.runtime import rng_state, set_rng_state
from smile_vlm.settings import RUNTIME_KEYS

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
LOG_NAME = "train_log.jsonl"
CHECKPOINT_FORMAT = 2  # 2: the checkpoint carries the training log (``history``)

LOG = logging.getLogger(__name__)


class StaleCheckpoint(ScanError):
    """A checkpoint of another recipe or format: nothing of it is loaded, the fold starts over."""


def remove_orphan_temp_files(out_dir: Path) -> list[Path]:
    """Delete the ``.<name>.tmp-*`` siblings (atomic.atomic_path) that a killed save left behind.

    Only one job writes a run folder (Snakemake locks its outputs), so a temp file that exists
    when the job starts belongs to a dead writer.
    """
    removed = []
    for name in (CHECKPOINT_NAME, MODEL_NAME, LOG_NAME):
        for orphan in Path(out_dir).glob(f".{name}.tmp-*"):
            if orphan.is_dir() and not orphan.is_symlink():
                shutil.rmtree(orphan, ignore_errors=True)
            else:
                orphan.unlink(missing_ok=True)
            LOG.info("removed %s, left by an interrupted save", orphan)
            removed.append(orphan)
    return removed


def write_log_file(path: Path, history: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps(record) + "\n" for record in history))


def save_checkpoint(path: Path, epochs_done: int, settings, variant, model, optimizer, scheduler, scaler,
                    history: list[dict]) -> None:
    state = {"format": CHECKPOINT_FORMAT, "epoch": epochs_done, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "rng": rng_state(), "settings": settings, "variant": variant,
             "history": list(history)}
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume(path: Path, settings: dict, variant: dict, model, optimizer, scheduler, scaler) -> tuple[int, list]:
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


def resume_or_start(path: Path, settings: dict, variant: dict, model, optimizer, scheduler, scaler,
                    write_log: bool = True) -> tuple[int, list]:
    """(finished epochs, log history) of the run folder's checkpoint, its state loaded; (0, [])
    when there is none or it was written with another recipe."""
    if not path.exists():
        return 0, []
    try:
        epochs, history = resume(path, settings, variant, model, optimizer, scheduler, scaler)
    except StaleCheckpoint as stale:
        # Snakemake reruns a fold whose recipe changed (params:); the old recipe's checkpoint is
        # of no use to it, and refusing would turn every such change into a manual cleanup.
        LOG.warning("%s; starting this fold over", stale)
        return 0, []
    if write_log:
        # The checkpoint's history is the log of record: a kill between the checkpoint and the
        # log write (or during the log write) loses no line.
        write_log_file(path.parent / LOG_NAME, history)
    return epochs, history


def save_model(path: Path, model, variant: dict, settings: dict, metadata: dict) -> None:
    """model.pt: the weights with what evaluation needs to rebuild and check them (models.load_trained)."""
    with atomic.atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "variant": variant, "settings": settings, **metadata}, tmp)
