"""Training throughput on CPU: samples/s of the training loop and of the data loader in one run.

A synthetic store of ~200 samples (3 views, ``--render-size`` renders: 64 by default, 224 as
the workflow's) is packed with pack_store in a temporary folder; one fold is trained with the
default compact CNN (width 32, depth 4, 64x64) and the offline MiniLM text encoder. The numbers
are the JSONL log's per-epoch ``samples_per_s`` (whole step: loading, augmenting, forward,
backward, update) and ``loader_samples_per_s`` (time spent waiting on the DataLoader only).
``--compare-clean-cache`` trains the same fold twice in one run, with the clean views cached once
(train.CLEAN_CACHE_MB, the default) and resized every step (the baseline), and checks that both
give the same weights.

    python benchmarks/bench_train.py --epochs 2 --threads 2 --workers 0 [--amp off]
    python benchmarks/bench_train.py --render-size 224 --batch-size 16 --threads 1 --compare-clean-cache
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from smile_vlm.checkpoint import LOG_NAME  # noqa: E402
from smile_vlm.folds import write_folds  # noqa: E402
from smile_vlm.train import train_fold  # noqa: E402
from test_train import CLASSES, make_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=17, help="17 subjects x 6 classes x 2 levels = 204 samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--amp", default="auto", help="train.amp: auto (bf16 on AVX-512 CPUs) or off")
    parser.add_argument("--render-size", type=int, default=64, help="side of the store's images (the workflow: 224)")
    parser.add_argument("--compare-clean-cache", action="store_true",
                        help="also train without the clean-view cache (baseline) in the same run")
    args = parser.parse_args()
    import smile_vlm.train as train

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
        runs = {"cached clean views": train.CLEAN_CACHE_MB}
        if args.compare_clean_cache:
            runs["baseline: clean views resized every step"] = 0
        weights, cache_seconds = {}, []
        build_cache = train.clean_view_cache

        def timed_cache(*args, **kwargs):
            started = time.perf_counter()
            cache = build_cache(*args, **kwargs)
            cache_seconds.append(time.perf_counter() - started)
            return cache

        train.clean_view_cache = timed_cache
        for name, cache_mb in runs.items():
            cache_seconds.clear()
            train.CLEAN_CACHE_MB = cache_mb
            started = time.perf_counter()
            model = train_fold(store, folds, 0, 0, {"model": "smile_vlm"}, settings, root / name)
            seconds = time.perf_counter() - started
            weights[name] = torch.load(model, weights_only=True)["model"]
            epochs = [json.loads(line) for line in (root / name / LOG_NAME).read_text().splitlines()]
            for record in epochs:
                print(json.dumps({key: record[key] for key in ("epoch", "step", "samples_per_s",
                                                                 "loader_samples_per_s", "seconds", "total")}))
            last = epochs[-1]
            print(f"{name}: {seconds:.1f} s for the job, {sum(r['seconds'] for r in epochs):.1f} s in the epochs, "
                  f"{sum(cache_seconds):.1f} s building the cache; last epoch: train {last['samples_per_s']:.1f} "
                  f"samples/s, data loader {last['loader_samples_per_s']:.1f} samples/s")
    print(f"store of {args.subjects * 12} samples ({args.render_size} px) packed in {packed:.1f} s "
          f"(threads {args.threads}, workers {args.workers}, batch {args.batch_size}, amp {args.amp})")
    if len(weights) == 2:
        first, second = weights.values()
        print("same weights with and without the cache:", all(torch.equal(first[k], second[k]) for k in first))


if __name__ == "__main__":
    main()
