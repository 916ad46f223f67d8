"""Dynamic-image time per sequence: 16 frames x 3 views at 224x224, approximate vs exact pooling.

    .venv/bin/python benchmarks/bench_dynamic.py [--frames 16] [--views 3] [--size 224] [--repeats 3]

Frames are a smooth synthetic brightening sequence with noise (uint8 RGB, like the renders).
Time includes the min-max to uint8 of every view.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from smile_vlm.dynamic import approximate_rank_pooling, exact_rank_pooling, to_uint8


def synthetic_sequence(frames: int, views: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(30, 180, (views, size, size, 3))
    direction = rng.uniform(0, 1, (views, size, size, 3))
    steps = np.linspace(0, 60, frames)[:, None, None, None, None]
    noisy = base + steps * direction + rng.normal(0, 3, (frames, views, size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def seconds_per_sequence(pool, sequence: np.ndarray, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for view in range(sequence.shape[1]):
            to_uint8(pool(sequence[:, view]))
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sequence = synthetic_sequence(args.frames, args.views, args.size)
    approximate = seconds_per_sequence(approximate_rank_pooling, sequence, args.repeats)
    exact = seconds_per_sequence(exact_rank_pooling, sequence, max(1, args.repeats // 3))
    print(f"{args.frames} frames x {args.views} views at {args.size}px")
    print(f"approximate rank pooling: {approximate * 1000:8.1f} ms per sequence")
    print(f"exact rank pooling      : {exact * 1000:8.1f} ms per sequence ({exact / approximate:.0f}x)")
    for name, seconds in (("approximate", approximate), ("exact", exact)):
        print(f"  BU-4DFE 606 sequences on 8 cores, {name}: {606 * seconds / 8 / 60:.2f} min")


if __name__ == "__main__":
    main()
