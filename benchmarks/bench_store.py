"""Store throughput: pack time, random single-sample reads, DataLoader samples/s.

Writes renders-like PNGs (smoothly shaded ellipsoids on black, one per view) for a fake dataset
into a temporary folder, packs them with ``smile_vlm.store.pack_store`` and times reading back.

    .venv/bin/python benchmarks/bench_store.py                      # 500 samples x 3 x 224 x 224 x 3
    .venv/bin/python benchmarks/bench_store.py --n-samples 100 --workers 0 2 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr
from PIL import Image

from smile_vlm import store
from smile_vlm.data import StoreDataset

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def shaded_ellipsoid(size: int, rng: np.random.Generator, yaw_deg: float) -> np.ndarray:
    """A Lambert-shaded ellipsoid on black, shifted with the view's yaw, like a face render."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    half_width, half_height = rng.uniform(0.45, 0.6), rng.uniform(0.6, 0.8)
    x = (x + np.sin(np.radians(yaw_deg)) * 0.3) / half_width
    y = y / half_height
    inside = x**2 + y**2 < 1
    depth = np.sqrt(np.clip(1 - x**2 - y**2, 0, 1))
    light = np.array([0.3 + rng.uniform(-0.1, 0.1), -0.4, 0.87])
    shade = np.clip(x * light[0] + y * light[1] + depth * light[2], 0, 1) * inside
    skin = np.array([224, 172, 145]) * rng.uniform(0.85, 1.0)
    return (shade[..., None] * skin).astype(np.uint8)


def write_fake_renders(root: Path, n_samples: int, views: list[dict], size: int, seed: int):
    rng = np.random.default_rng(seed)
    manifest, shards = [], {}
    for n in range(n_samples):
        subject, sample_id = f"S{n % 50:03d}", f"S{n % 50:03d}_{n:05d}"
        label = CLASSES[n % len(CLASSES)]
        manifest.append({"dataset": "bench", "sample_id": sample_id, "subject": subject, "sequence": "",
                         "frame": 0, "label": label, "labels": label, "intensity": -1,
                         "mesh_path": f"raw/{sample_id}.wrl"})
        shard = root / "renders" / subject
        shard.mkdir(parents=True, exist_ok=True)
        names = []
        for view, angles in enumerate(views):
            name = f"{sample_id}_v{view}.png"
            Image.fromarray(shaded_ellipsoid(size, rng, angles["yaw"])).save(shard / name)
            names.append(name)
        shards.setdefault(shard, []).append(
            {"sample_id": sample_id, "n_frames": 1, "images": "|".join(names)})
    pd.DataFrame(manifest).to_csv(root / "manifest.csv", index=False)
    for shard, rows in shards.items():
        pd.DataFrame(rows).to_csv(shard / "index.csv", index=False)
    return root / "manifest.csv", [shard / "index.csv" for shard in shards]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--size", type=int, default=224, help="image height = width")
    parser.add_argument("--reads", type=int, default=500, help="random single-sample reads to time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=2, help="DataLoader epochs timed (one number each)")
    parser.add_argument("--compression-level", type=int, default=store.DEFAULT_COMPRESSION_LEVEL)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    views = [{"yaw": yaw, "pitch": 0} for yaw in (-30, 0, 30)]
    results = {"n_samples": args.n_samples, "sample_shape": [len(views), args.size, args.size, 3]}
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        root = Path(tmp)
        manifest_csv, index_csvs = write_fake_renders(root, args.n_samples, views, args.size, args.seed)
        settings = {"classes": CLASSES, "multi_label": False, "views": views,
                    "render": {"image_size": args.size}, "compression_level": args.compression_level}
        out = root / "store.zarr"
        start = time.perf_counter()
        store.pack_store(manifest_csv, index_csvs, out, "bench", settings)
        results["pack_s"] = time.perf_counter() - start
        on_disk = sum(f.stat().st_size for f in (out / "images").rglob("*") if f.is_file())
        raw = args.n_samples * np.prod(results["sample_shape"])
        results["images_on_disk_mb"] = on_disk / 1e6
        results["compression_ratio"] = raw / on_disk

        images = zarr.open_group(out, mode="r")["images"]
        order = np.random.default_rng(args.seed).integers(0, args.n_samples, args.reads)
        start = time.perf_counter()
        for row in order:
            images[int(row)]
        elapsed = time.perf_counter() - start
        results["random_reads_per_s"] = args.reads / elapsed
        results["random_read_ms"] = 1e3 * elapsed / args.reads

        dataset = StoreDataset(out)
        for workers in args.workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                                 num_workers=workers)
            per_epoch = []
            for _ in range(args.epochs):  # worker start-up is inside each epoch, as in training
                start = time.perf_counter()
                seen = sum(len(batch["index"]) for batch in loader)
                per_epoch.append(round(seen / (time.perf_counter() - start), 1))
            results[f"dataloader_samples_per_s_workers_{workers}"] = per_epoch
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
