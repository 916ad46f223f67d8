"""Training throughput on CPU: samples/s of the training loop and of the data loader in one run.

A synthetic store of ~200 samples (3 views, ``--render-size`` renders: 64 by default, 224 as
the workflow's) is packed with pack_store in a temporary folder; one fold is trained with the
default compact CNN (width 32, depth 4, 64x64) and the offline MiniLM text encoder. The numbers
are the JSONL log's per-epoch ``samples_per_s`` (whole step: loading, augmenting, forward,
backward, update) and ``loader_samples_per_s`` (time spent waiting on the DataLoader only).

``--compare-baseline`` trains the same fold a second time in the same process with every
speed-only measure of the training job undone, and checks that both give the same weights. The
baseline: the store's chunks decompressed every epoch (train.IMAGE_CACHE_MB = 0), the clean
views resized every step (train.CLEAN_CACHE_MB = 0), torch.use_deterministic_algorithms as torch
ships it (every new tensor NaN-filled), the float conversion of the augmentations done on the
CHW view of the store's HWC images and once per view, and the blur convolving every image (the
identity kernel where no blur was drawn). It runs first, so the ~2 s that the public
torch.use_deterministic_algorithms spends importing torch._inductor is charged to it; the
job-level cost of that import is timed separately, each way in a fresh interpreter.

    python benchmarks/bench_train.py --epochs 2 --threads 2 --workers 0 [--amp off]
    python benchmarks/bench_train.py --render-size 224 --batch-size 16 --threads 1 --epochs 4 --compare-baseline
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import smile_vlm.augment as augment  # noqa: E402
import smile_vlm.runtime as runtime  # noqa: E402
import smile_vlm.train as train  # noqa: E402
from smile_vlm.checkpoint import LOG_NAME  # noqa: E402
from smile_vlm.folds import write_folds  # noqa: E402
from test_train import CLASSES, make_store  # noqa: E402

BASELINE = "baseline: every speed-only measure undone"
CURRENT = "as shipped"


def _baseline_to_float(images: torch.Tensor) -> torch.Tensor:
    images = images.movedim(-1, -3).float().div_(255.0)
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    return images


def _baseline_blur(images, generator, sigma=(0.1, 2.0), probability=0.5):
    count, channels, height, width = images.shape
    apply = augment._bernoulli(count, probability, generator)
    sigmas = augment._uniform(count, sigma[0], sigma[1], generator)
    radius = max(1, math.ceil(3 * sigma[1]))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, None]) ** 2)
    kernels = torch.where(apply[:, None], kernels / kernels.sum(dim=1, keepdim=True), (offsets == 0).float())
    kernels = kernels.repeat_interleave(channels, dim=0).to(images.device, images.dtype)
    flat = F.pad(images.reshape(1, count * channels, height, width), (radius,) * 4, mode="replicate")
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, 2 * radius + 1), groups=count * channels)
    flat = F.conv2d(flat, kernels.view(-1, 1, 2 * radius + 1, 1), groups=count * channels)
    return flat.view(count, channels, height, width)


def _baseline_two_views(self, images, generator, device=None):
    return self(images, generator, device), self(images, generator, device)


def _baseline_deterministic() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def baseline_settings():
    saved = (train.IMAGE_CACHE_MB, train.CLEAN_CACHE_MB, augment.to_float, augment.gaussian_blur,
             augment.Augmenter.two_views, runtime.use_deterministic_algorithms)
    train.IMAGE_CACHE_MB, train.CLEAN_CACHE_MB = 0, 0
    augment.to_float, augment.gaussian_blur = _baseline_to_float, _baseline_blur
    augment.Augmenter.two_views = _baseline_two_views
    runtime.use_deterministic_algorithms = _baseline_deterministic
    try:
        yield
    finally:
        (train.IMAGE_CACHE_MB, train.CLEAN_CACHE_MB, augment.to_float, augment.gaussian_blur,
         augment.Augmenter.two_views, runtime.use_deterministic_algorithms) = saved
        torch.utils.deterministic.fill_uninitialized_memory = False


def deterministic_setup_seconds(code: str) -> float:
    """Seconds a fresh interpreter (torch already imported) spends in ``code``."""
    script = ("import time, torch\nfrom smile_vlm import runtime\nstart = time.perf_counter()\n"
              f"{code}\nprint(time.perf_counter() - start)\n")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=17, help="17 subjects x 6 classes x 2 levels = 204 samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--amp", default="auto", help="train.amp: auto (bf16 on AVX-512 CPUs) or off")
    parser.add_argument("--render-size", type=int, default=64, help="side of the store's images (the workflow: 224)")
    parser.add_argument("--compare-baseline", action="store_true",
                        help="also train with every speed-only measure undone (baseline) in the same run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start = time.perf_counter()
        store = make_store(root, n_subjects=args.subjects, size=args.render_size)
        folds = root / "folds.csv"
        write_folds(store, {"folds": 10, "seed": 0, "classes": CLASSES}, folds)
        packed = time.perf_counter() - start
        settings = {"train": {"epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
                              "workers": args.workers, "progress": False, "amp": args.amp},
                    "encoders": {"vision": {"kind": "cnn", "image_size": 64}}, "classes": CLASSES}
        runs = {BASELINE: baseline_settings, CURRENT: contextlib.nullcontext} if args.compare_baseline \
            else {CURRENT: contextlib.nullcontext}
        weights = {}
        for name, context in runs.items():
            with context():
                started = time.perf_counter()
                model = train.train_fold(store, folds, 0, 0, {"model": "smile_vlm"}, settings, root / name)
                seconds = time.perf_counter() - started
            weights[name] = torch.load(model, weights_only=True)["model"]
            epochs = [json.loads(line) for line in (root / name / LOG_NAME).read_text().splitlines()]
            for record in epochs:
                print(json.dumps({key: record[key] for key in ("epoch", "step", "samples_per_s",
                                                                 "loader_samples_per_s", "seconds", "total")}))
            last = epochs[-1]
            print(f"{name}: {seconds:.1f} s for train_fold, {sum(r['seconds'] for r in epochs):.1f} s in the epochs; "
                  f"last epoch: train {last['samples_per_s']:.1f} samples/s, "
                  f"data loader {last['loader_samples_per_s']:.1f} samples/s")
    print(f"store of {args.subjects * 12} samples ({args.render_size} px) packed in {packed:.1f} s "
          f"(threads {args.threads}, workers {args.workers}, batch {args.batch_size}, amp {args.amp})")
    if len(weights) == 2:
        first, second = weights.values()
        print("same weights as the baseline:", all(torch.equal(first[k], second[k]) for k in first))
        print(f"deterministic set-up in a fresh interpreter: torch.use_deterministic_algorithms "
              f"{deterministic_setup_seconds('torch.use_deterministic_algorithms(True, warn_only=True)'):.2f} s, "
              f"runtime.use_deterministic_algorithms "
              f"{deterministic_setup_seconds('runtime.use_deterministic_algorithms()'):.2f} s")


if __name__ == "__main__":
    main()
