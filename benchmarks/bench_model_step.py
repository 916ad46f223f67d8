"""One optimisation step of the default models on CPU: 3 views, batch 32, 64x64, compact CNN.

    .venv/bin/python benchmarks/bench_model_step.py [--threads 2] [--batch 32] [--views 3] [--steps 5]

A step = encode two augmentations and the clean views (3 forward passes of B x V images), the
losses, backward, AdamW. Text embeddings are random unit vectors of MiniLM's size (384): the text
encoder is frozen and its prompt bank is computed once per run, so it is not part of a step.
Prints the median seconds per step for SMILE-VLM and FACET-VLM, in float32 and under bfloat16
autocast (what `train.amp: auto` picks on CPUs with native bf16, e.g. AVX-512).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from smile_vlm.models import build_model


def median_step_seconds(name: str, batch: int, views: int, steps: int, text_dim: int = 384, classes: int = 6,
                        bf16: bool = False) -> float:
    torch.manual_seed(0)
    model = build_model({"model": name}, views, text_dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    images = torch.rand(3, batch, views, 3, 64, 64)
    class_emb = F.normalize(torch.randn(classes, text_dim), dim=-1)
    labels = torch.arange(batch) % classes
    text_emb = class_emb[labels]
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and is dropped
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as train.amp: auto does on AVX-512
            losses = model.training_losses(images[0], images[1], images[2], text_emb, class_emb, labels)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in ("smile_vlm", "facet_vlm"):
        for bf16 in (False, True):
            seconds = median_step_seconds(name, args.batch, args.views, args.steps, bf16=bf16)
            print(f"{name} {'bf16' if bf16 else 'fp32'}: {seconds:.3f} s/step "
                  f"(batch {args.batch}, {args.views} views, 64x64, {args.threads} threads)")


if __name__ == "__main__":
    main()
