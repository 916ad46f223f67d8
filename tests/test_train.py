"""Training of one fold on a tiny synthetic store: frozen text tower, checkpoints, exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import smile_vlm.models.encoders as encoders
from smile_vlm import atomic
from smile_vlm.folds import write_folds
from smile_vlm.store import pack_store
from smile_vlm.checkpoint import CHECKPOINT_NAME, LOG_NAME
from smile_vlm.cli import main as cli_main
from smile_vlm.settings import resolve_settings
from smile_vlm.optim import lr_factor
from smile_vlm.train import batches_for_epoch, train_fold

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
VIEWS = [{"yaw": 0, "pitch": 0}, {"yaw": -30, "pitch": 0}, {"yaw": 30, "pitch": 0}]
TINY_VARIANT = {"model": "smile_vlm", "projector": [16], "fusion_hidden": 8}


class HashedTextEncoder(nn.Module):
    """A small deterministic text encoder: hashed character trigrams -> fixed random projection."""

    def __init__(self, dim: int = 12, buckets: int = 64):
        super().__init__()
        self.buckets = buckets
        self.projection = nn.Linear(buckets, dim, bias=False)
        torch.nn.init.normal_(self.projection.weight, generator=torch.Generator().manual_seed(0))
        self.dim = dim

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        counts = torch.zeros(len(texts), self.buckets)
        for row, text in enumerate(texts):
            for start in range(len(text) - 2):
                counts[row, zlib.crc32(text[start:start + 3].encode()) % self.buckets] += 1
        return nn.functional.normalize(self.projection(counts), dim=-1)


@pytest.fixture
def text_encoder(monkeypatch) -> HashedTextEncoder:
    """The trainer's text tower: its parameters are left trainable on purpose, so only the trainer
    keeps them frozen."""
    encoder = HashedTextEncoder()
    monkeypatch.setattr(encoders, "load_text_encoder", lambda spec=None: encoder)
    return encoder


def make_store(root, n_subjects=6, size=16, multi_label=False, classes=CLASSES, seed=0, dataset="toy",
               view_class=lambda k, v: k):
    """Pack a synthetic store with pack_store: one sample per (subject, class, level 3/4);
    each class draws a bright square at its own position, so the views carry the class.
    ``view_class(k, v)`` is the class whose square view v of a class-k sample shows."""
    rng = np.random.default_rng(seed)
    rows, index_rows = [], []
    for s in range(n_subjects):
        subject = f"S{s:02d}"
        for k, name in enumerate(classes):
            for level in (3, 4):
                sample_id = f"{subject}_{name}_{level}"
                paths = []
                for v in range(len(VIEWS)):
                    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                    corner = 2 * view_class(k, v) % (size - 4)
                    image[corner:corner + 4, corner + v:corner + v + 4] = 220
                    path = root / "png" / f"{sample_id}_v{v}.png"
                    atomic.save_image(path, image)
                    paths.append(str(path))
                labels = f"{name}|{classes[(k + 1) % len(classes)]}" if multi_label else name
                rows.append({"dataset": dataset, "sample_id": sample_id, "subject": subject, "sequence": name,
                             "frame": 0, "label": "" if multi_label else name, "labels": labels,
                             "intensity": level, "mesh_path": f"{sample_id}.wrl"})
                index_rows.append({"sample_id": sample_id, "n_frames": 1, "images": "|".join(paths)})
    atomic.write_csv(root / "manifest.csv", pd.DataFrame(rows))
    atomic.write_csv(root / "shard" / "index.csv", pd.DataFrame(index_rows))
    store = root / "store.zarr"
    pack_store(root / "manifest.csv", [root / "shard" / "index.csv"], store, dataset,
               {"classes": list(classes), "multi_label": multi_label, "views": VIEWS, "render": {"size": size}})
    return store


def make_fold_inputs(tmp_path, n_subjects=6, multi_label=False, classes=CLASSES):
    store = make_store(tmp_path, n_subjects, multi_label=multi_label, classes=classes)
    folds = tmp_path / "folds.csv"
    write_folds(store, {"folds": 3, "seed": 0, "classes": list(classes)}, folds)
    return store, folds


def tiny_settings(**train) -> dict:
    return {"train": {"epochs": 2, "batch_size": 8, "seed": 0, "threads": 1, "progress": False, "log_every": 1,
                      "warmup_epochs": 0.5, **train},
            "encoders": {"vision": {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16}},
            "classes": CLASSES}


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, text_encoder):
    store, folds = make_fold_inputs(tmp_path)
    settings = tiny_settings()
    straight = load(train_fold(store, folds, 0, 1, TINY_VARIANT, settings, tmp_path / "straight"))

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epoch, record):
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        train_fold(store, folds, 0, 1, TINY_VARIANT, settings, tmp_path / "resumed", on_epoch_end=kill_after_first_epoch)
    assert load(tmp_path / "resumed" / CHECKPOINT_NAME)["epoch"] == 1
    assert not (tmp_path / "resumed" / "model.pt").exists()
    resumed = load(train_fold(store, folds, 0, 1, TINY_VARIANT, settings, tmp_path / "resumed"))

    assert straight["model"].keys() == resumed["model"].keys()
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    log_straight = [json.loads(line) for line in (tmp_path / "straight" / LOG_NAME).read_text().splitlines()]
    log_resumed = [json.loads(line) for line in (tmp_path / "resumed" / LOG_NAME).read_text().splitlines()]
    losses = lambda log: [(r["kind"], r["epoch"], r["step"], r["total"], r["mv_bt"], r["lr"]) for r in log]
    assert losses(log_straight) == losses(log_resumed)
    # 6 subjects in 3 folds: 4 train subjects x 6 classes x 2 levels = 48 samples, batch 8 -> 6 steps
    epochs = [r for r in log_straight if r["kind"] == "epoch"]
    assert [r["step"] for r in epochs] == [6, 12] and all(r["samples_per_s"] > 0 for r in epochs)


def test_checkpoint_loads_with_weights_only_and_holds_the_run_state(tmp_path, text_encoder):
    store, folds = make_fold_inputs(tmp_path)
    final = train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=1), tmp_path / "run")
    checkpoint = load(tmp_path / "run" / CHECKPOINT_NAME)
    assert checkpoint["epoch"] == 1 and checkpoint["settings"]["train"]["epochs"] == 1
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "scaler", "rng", "settings", "variant"}
    assert checkpoint["rng"]["torch"].dtype == torch.uint8 and checkpoint["rng"]["python"]["state"].numel() == 625
    assert checkpoint["scheduler"]["last_epoch"] == 6  # 4 train subjects x 12 samples / batch 8
    saved = load(final)
    assert saved["classes"] == CLASSES and saved["n_views"] == 3 and saved["text_dim"] == 12
    assert saved["variant"]["model"] == "smile_vlm" and saved["variant"]["vision"]["image_size"] == 16


def test_text_tower_is_frozen_and_outside_the_optimizer(tmp_path, text_encoder):
    store, folds = make_fold_inputs(tmp_path)
    before = {name: p.detach().clone() for name, p in text_encoder.named_parameters()}
    train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=1), tmp_path / "run")
    for name, p in text_encoder.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None, name
    checkpoint = load(tmp_path / "run" / CHECKPOINT_NAME)
    n_optimised = sum(len(group["params"]) for group in checkpoint["optimizer"]["param_groups"])
    n_model = sum(1 for name in checkpoint["model"] if not name.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n_optimised == n_model  # the optimiser holds exactly the model's (vision-side) parameters


def test_a_checkpoint_of_another_recipe_is_not_resumed(tmp_path, text_encoder, caplog):
    store, folds = make_fold_inputs(tmp_path)
    train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=1), tmp_path / "run")
    with caplog.at_level("WARNING", logger="smile_vlm.train"):
        rerun = load(train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=1, lr=1e-2), tmp_path / "run"))
    assert "written with different settings (train.lr); starting this fold over" in caplog.text
    fresh = load(train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=1, lr=1e-2), tmp_path / "fresh"))
    for name, tensor in fresh["model"].items():
        assert torch.equal(rerun["model"][name], tensor), name
    assert load(tmp_path / "run" / CHECKPOINT_NAME)["settings"]["train"]["lr"] == 1e-2


def write_pretrained_vision(path, seed: int):
    """A vision.pt as `smile-vlm pretrain` writes it, with random weights drawn from ``seed``."""
    spec = {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16}
    torch.manual_seed(seed)
    encoder = encoders.load_vision_encoder(dict(spec))
    torch.save({"format": encoders.PRETRAINED_VISION_FORMAT, "architecture": encoders.vision_architecture(spec),
                "state_dict": encoder.state_dict()}, path)


def test_a_rebuilt_pretrained_init_starts_the_fold_over_and_the_model_loads_without_it(tmp_path, text_encoder):
    from smile_vlm.models import load_trained

    store, folds = make_fold_inputs(tmp_path)
    init = tmp_path / "vision.pt"
    settings = tiny_settings(epochs=1)
    settings["encoders"]["vision"]["init"] = str(init)
    write_pretrained_vision(init, seed=1)
    first = load(train_fold(store, folds, 0, 0, TINY_VARIANT, settings, tmp_path / "run"))
    write_pretrained_vision(init, seed=2)  # rebuilt at the same path: same settings, other weights
    rerun = load(train_fold(store, folds, 0, 0, TINY_VARIANT, settings, tmp_path / "run"))
    fresh = load(train_fold(store, folds, 0, 0, TINY_VARIANT, settings, tmp_path / "fresh"))
    name = next(n for n in fresh["model"] if "vision_encoder" in n)
    assert not torch.equal(first["model"][name], rerun["model"][name])
    for name, tensor in fresh["model"].items():
        assert torch.equal(rerun["model"][name], tensor), name
    init.unlink()  # evaluation and predict need the trained weights, not the pretrained start
    model, _ = load_trained(tmp_path / "run" / "model.pt")
    assert torch.equal(model.state_dict()[name], rerun["model"][name])


@pytest.mark.parametrize("variant", [TINY_VARIANT, {"model": "facet_vlm", "projector": [16], "facet": {"heads": 2}}],
                         ids=["smile_vlm", "facet_vlm"])
def test_pseudo_labels_and_multilabel_store_train(tmp_path, text_encoder, variant):
    store, folds = make_fold_inputs(tmp_path, n_subjects=3, multi_label=True, classes=["negative", "positive", "surprise"])
    settings = {**tiny_settings(epochs=1), "classes": ["negative", "positive", "surprise"],
                "prompts": {"source": "pseudo"}}
    final = train_fold(store, folds, 0, 0, variant, settings, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    assert np.isfinite(log[-1]["total"]) and load(final)["classes"] == ["negative", "positive", "surprise"]


def test_a_text_bank_file_trains_exactly_as_the_text_encoder_does(tmp_path, text_encoder, monkeypatch):
    from smile_vlm.prompts import write_text_bank

    store, folds = make_fold_inputs(tmp_path)
    settings = tiny_settings(epochs=1)
    direct = load(train_fold(store, folds, 0, 0, TINY_VARIANT, settings, tmp_path / "direct"))
    write_text_bank(settings, tmp_path / "bank.pt")

    def no_text_tower(spec=None):
        raise AssertionError("a job given a text bank must not load the text encoder")

    monkeypatch.setattr(encoders, "load_text_encoder", no_text_tower)
    code = cli_main(["train", "--store", str(store), "--folds", str(folds), "--k", "0", "--variant", json.dumps(TINY_VARIANT),
                 "--settings", json.dumps(settings), "--out", str(tmp_path / "banked"),
                 "--text-bank", str(tmp_path / "bank.pt")])
    banked = load(tmp_path / "banked" / "model.pt")
    assert code == 0 and banked["text_dim"] == direct["text_dim"] == 12
    for name, tensor in direct["model"].items():
        torch.testing.assert_close(banked["model"][name], tensor, rtol=0, atol=1e-5, msg=name)


def test_cli_main_trains_by_job_number(tmp_path, text_encoder):
    store, folds = make_fold_inputs(tmp_path)
    code = cli_main(["train", "--store", str(store), "--folds", str(folds), "--k", "2",
                 "--variant", json.dumps(TINY_VARIANT), "--settings", json.dumps(tiny_settings(epochs=1)),
                 "--out", str(tmp_path / "run")])
    assert code == 0 and load(tmp_path / "run" / "model.pt")["fold"] == 2


def test_schedule_and_batches():
    assert lr_factor(0, 10, 2, 0.0) == 0.5 and lr_factor(1, 10, 2, 0.0) == 1.0
    assert lr_factor(2, 10, 2, 0.0) == 1.0 and lr_factor(6, 10, 2, 0.0) == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, 0.1) == pytest.approx(0.1)
    batches = batches_for_epoch(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4] and len(set(sum(batches, []))) == 8  # partial batch dropped
    halves = [batches_for_epoch(10, 4, torch.Generator().manual_seed(0), rank, 2) for rank in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == batches  # DDP ranks split each global batch
    with pytest.raises(ValueError, match="unknown train settings"):
        resolve_settings({"train": {"epoch": 3}})


BP4D_CLASSES = ["happiness", "sadness", "surprise", "embarrassment", "fear", "pain", "anger", "disgust"]
CROSS_PROTOCOL = {"split": "cross"}
CROSS_CLASSES = ["happiness", "disgust"]


def make_cross_inputs(tmp_path, **protocol):
    """A six-class 'bu4dfe' training store (3 subjects) and an eight-class 'bp4d' test store
    (2 subjects) whose subject names S00, S01 collide with the training store's; one cross fold."""
    train_store = make_store(tmp_path / "bu4dfe", n_subjects=3, dataset="bu4dfe")
    test_store = make_store(tmp_path / "bp4d", n_subjects=2, classes=BP4D_CLASSES, dataset="bp4d", seed=1)
    folds = tmp_path / "folds.csv"
    write_folds(test_store, {**CROSS_PROTOCOL, **protocol, "classes": CROSS_CLASSES}, folds, train_store=train_store)
    return train_store, test_store, folds


def cross_settings(**protocol) -> dict:
    settings = tiny_settings(epochs=1, batch_size=12)
    return {**settings, "classes": CROSS_CLASSES, "protocol": {**CROSS_PROTOCOL, **protocol}}


def test_cross_fold_reads_only_the_training_store(tmp_path, text_encoder, monkeypatch):
    from smile_vlm.errors import ScanError
    from smile_vlm.data import StoreDataset

    train_store, test_store, folds = make_cross_inputs(tmp_path)
    written = pd.read_csv(folds)
    assert written.groupby(["split", "dataset"])["subject"].apply(list).to_dict() == {
        ("test", "bp4d"): ["S00", "S01"], ("train", "bu4dfe"): ["S00", "S01", "S02"]}

    read = []
    original = StoreDataset.__getitem__

    def recording(self, item):
        sample = original(self, item)
        read.append((self.path, sample["index"], sample["subject"]))
        return sample

    monkeypatch.setattr(StoreDataset, "__getitem__", recording)
    final = train_fold(train_store, folds, 0, 0, TINY_VARIANT, cross_settings(), tmp_path / "run")
    # every sample trained on is a training-store row; after the first read (train_fold looks at
    # row 0 for the view count) the clean-view cache and one epoch of 3 batches of 12 each read
    # all 36 (3 subjects x 6 classes x 2 levels); no row of the test store is ever read
    assert {path for path, _, _ in read} == {train_store}
    assert sorted(row for _, row, _ in read[1:]) == sorted(list(range(36)) * 2)
    saved = load(final)
    assert saved["classes"] == CLASSES and saved["train_dataset"] == "bu4dfe" and saved["n_train"] == 36
    assert saved["train_store"] == str(train_store)

    with pytest.raises(ScanError, match="no training sample in this store \\(dataset 'bp4d'\\)"):
        train_fold(test_store, folds, 0, 0, TINY_VARIANT, cross_settings(), tmp_path / "wrong")


def test_write_folds_refuses_another_training_store_without_cross(tmp_path):
    from smile_vlm.errors import ScanError

    store = make_store(tmp_path / "a", n_subjects=3, dataset="bu4dfe")
    other = make_store(tmp_path / "b", n_subjects=3, dataset="bp4d")
    with pytest.raises(ScanError, match="needs split 'cross'"):
        write_folds(store, {"folds": 3}, tmp_path / "folds.csv", train_store=other)
    # the same store passed as its own training store is the ordinary within-dataset protocol
    folds = write_folds(store, {"folds": 3}, tmp_path / "folds.csv", train_store=store)
    assert "dataset" not in folds.columns and folds["k"].nunique() == 3


def test_multilabel_prompts_are_drawn_from_the_positive_classes():
    from smile_vlm.targets import FoldTargets

    # store classes in 4DME order; the experiment keeps three of them, in its own order
    targets = FoldTargets(["positive", "negative", "surprise", "repression", "others"],
                          ["surprise", "positive", "others"], multi_label=True)
    labels = torch.tensor([[1, 1, 0, 0, 0],    # positive, negative -> only "positive" is kept (index 1)
                           [0, 0, 1, 0, 1],    # surprise, others -> 0 or 2
                           [1, 0, 1, 0, 1]], dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([targets.prompt_classes({"labels": labels}, generator) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1}
    assert set(draws[:, 1].tolist()) == {0, 2}
    assert set(draws[:, 2].tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(targets.labels({"labels": labels}).numpy(), [[0, 1, 0], [1, 0, 1], [1, 1, 1]])


def test_mixed_precision_choice_per_device(monkeypatch):
    import smile_vlm.runtime as train

    cpu = torch.device("cpu")
    assert train.amp_dtype("off", cpu) is None
    assert train.amp_dtype("bf16", cpu) is torch.bfloat16
    assert train.amp_dtype("fp16", cpu) is None  # fp16 autocast is CUDA only
    monkeypatch.setattr(train, "cpu_has_fast_bf16", lambda: True)
    assert train.amp_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(train, "cpu_has_fast_bf16", lambda: False)  # emulated bf16 would be slower
    assert train.amp_dtype("auto", cpu) is None
    with pytest.raises(ValueError, match="train.amp must be one of"):
        train.amp_dtype("int8", cpu)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_training_in_either_precision_is_finite_and_keeps_float32_weights(tmp_path, text_encoder, amp):
    store, folds = make_fold_inputs(tmp_path)
    final = load(train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=1, amp=amp), tmp_path / amp))
    log = [json.loads(line) for line in (tmp_path / amp / LOG_NAME).read_text().splitlines()]
    assert all(np.isfinite(log[-1][term]) for term in ("total", "mv_bt", "vl_align", "red_min"))
    assert all(t.dtype in (torch.float32, torch.int64) for t in final["model"].values())


def test_cached_images_and_clean_views_train_exactly_as_reading_and_resizing_every_step(
        tmp_path, text_encoder, monkeypatch):
    """The split's images are read into memory once (train.IMAGE_CACHE_MB) and the clean views
    computed once (train.CLEAN_CACHE_MB); a split too large for either cache is read or resized
    every step instead, and every combination gives bit-identical weights."""
    import smile_vlm.train as train

    store, folds = make_fold_inputs(tmp_path)
    cached = load(train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=2), tmp_path / "cached"))
    for images_mb, clean_mb in ((0, 0), (0, train.CLEAN_CACHE_MB), (train.IMAGE_CACHE_MB, 0)):
        monkeypatch.setattr(train, "IMAGE_CACHE_MB", images_mb)
        monkeypatch.setattr(train, "CLEAN_CACHE_MB", clean_mb)
        out = tmp_path / f"images{images_mb}_clean{clean_mb}"
        other = load(train_fold(store, folds, 0, 0, TINY_VARIANT, tiny_settings(epochs=2), out))
        for name, tensor in cached["model"].items():
            assert torch.equal(other["model"][name], tensor), (images_mb, clean_mb, name)


def test_deterministic_mode_is_on_without_importing_the_compiler():
    """train.deterministic sets torch's deterministic kernels (warning where there is none) but
    neither imports torch._inductor (seconds per job) nor NaN-fills every new tensor."""
    code = ("import sys, torch\n"
            "from smile_vlm import runtime\n"
            "runtime.use_deterministic_algorithms()\n"
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),"
            " torch.utils.deterministic.fill_uninitialized_memory, 'torch._inductor' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "False"]
