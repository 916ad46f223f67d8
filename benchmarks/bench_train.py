"""Training throughput on CPU: samples/s of the training loop and of the data loader in one run.

A synthetic store of ~200 samples (3 views, 64x64 renders) is packed with pack_store in a
temporary folder; one fold is trained with the default compact CNN (width 32, depth 4, 64x64)
and the offline MiniLM text encoder. The numbers are the JSONL log's per-epoch
``samples_per_s`` (whole step: loading, augmenting, forward, backward, update) and
``loader_samples_per_s`` (time spent waiting on the DataLoader only).

    python benchmarks/bench_train.py --epochs 2 --threads 2 --workers 0 [--amp off]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from smile_vlm.folds import write_folds  # noqa: E402
from smile_vlm.train import LOG_NAME, train_fold  # noqa: E402
from test_train import CLASSES, make_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=17, help="17 subjects x 6 classes x 2 levels = 204 samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--amp", default="auto", help="train.amp: auto (bf16 on AVX-512 CPUs) or off")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start = time.perf_counter()
        store = make_store(root, n_subjects=args.subjects, size=64)
        folds = root / "folds.csv"
        write_folds(store, {"folds": 10, "seed": 0, "classes": CLASSES}, folds)
        packed = time.perf_counter() - start
        settings = {"train": {"epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
                              "workers": args.workers, "progress": False, "amp": args.amp},
                    "encoders": {"vision": {"kind": "cnn", "image_size": 64}}, "classes": CLASSES}
        train_fold(store, folds, 0, 0, {"model": "smile_vlm"}, settings, root / "run")
        epochs = [json.loads(line) for line in (root / "run" / LOG_NAME).read_text().splitlines()]
    for record in epochs:
        print(json.dumps({key: record[key] for key in ("epoch", "step", "samples_per_s", "loader_samples_per_s",
                                                         "seconds", "total")}))
    last = epochs[-1]
    print(f"store of {args.subjects * 12} samples packed in {packed:.1f} s; last epoch: "
          f"train {last['samples_per_s']:.1f} samples/s, data loader {last['loader_samples_per_s']:.1f} samples/s "
          f"(threads {args.threads}, workers {args.workers}, batch {args.batch_size}, amp {args.amp})")


if __name__ == "__main__":
    main()
