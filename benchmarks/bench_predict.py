"""Throughput of `smile-vlm predict` on one CPU core, against rendering alone in the same run.

    .venv/bin/python benchmarks/bench_predict.py [--subjects 2] [--scans 12]

Builds a synthetic BU-4DFE store with the default render settings (224 px, 3 views, 16 of the
24 synthetic frames, approximate rank pooling), trains its deployable model for one epoch with
the default encoders (compact CNN at 64 px, frozen MiniLM; speed does not depend on the weights),
then times, with one torch thread and one llvmpipe thread:

- model load: ``Predictor(...)`` (once per command);
- predict: every sequence folder of the store's subjects through ``Predictor.predict`` (read,
  canonicalise, render, pool, score), and ``--scans`` BU-3DFE F3D scans with ``kind="scan"``;
- baseline: ``render.render_shard`` alone on the same samples (the render rule's own work, which
  predict runs unchanged), so the difference is what predict adds (PNG round trip, scoring).

One static scan is predicted before the timings, so neither side pays the first pyrender import.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["LP_NUM_THREADS"] = "1"  # before any GL import
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the store builder of test_predict

RENDER = {"backend": "osmesa", "size": 224, "yaws": [0, -30, 30], "pitches": [0], "mode": "shaded",
          "radius_mm": 90, "frames": 16, "pooling": "approximate"}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def build_model(root: Path, subjects: int) -> Path:
    from smile_vlm.final import train_final
    from smile_vlm.folds import write_folds
    from smile_vlm.readers.names import CLASSES
    from test_predict import bu4dfe_store

    store = bu4dfe_store(root, {"subjects": {"bu4dfe": subjects}}, RENDER)
    classes = CLASSES["bu4dfe"]
    write_folds(store, {"folds": 2, "classes": classes}, root / "folds.csv")
    settings = {"train": {"epochs": 1, "batch_size": 8, "threads": 1, "progress": False}, "classes": classes}
    return train_final(store, root / "folds.csv", {"model": "smile_vlm"}, settings, root / "final")


def render_only(samples, workdir: Path) -> None:
    """The render rule's work on the same samples: one render_shard call over a manifest of them."""
    from smile_vlm.render import render_shard
    from smile_vlm.settings import complete

    rows = [{"dataset": "bench", "sample_id": f"s{i}", "subject": "x", "frame": number, "mesh_path": str(path),
             "landmark_path": ""} for i, sample in enumerate(samples) for number, path in sample.frames]
    workdir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(workdir / "manifest.csv", index=False)
    render_shard(workdir / "manifest.csv", "bench", "x", workdir / "views", complete("render", RENDER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2, help="synthetic BU-4DFE subjects (6 sequences each)")
    parser.add_argument("--scans", type=int, default=12, help="BU-3DFE static scans to predict")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from smile_vlm.predict import Predictor, find_samples
    from smile_vlm.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, build_seconds = timed(build_model, root, args.subjects)
        print(f"setup (synthetic data, store, one training epoch): {build_seconds:.0f} s")
        predictor, load_seconds = timed(Predictor, model)
        print(f"model load: {load_seconds:.2f} s")

        subject_folders = sorted(p for p in (root / "raw").iterdir() if p.name[0] in "FM" and p.is_dir())
        sequences = find_samples(subject_folders, sequences=True)
        generate("bu3dfe", root / "bu3dfe", {"subjects": {"bu3dfe": 1}})
        scans = find_samples(sorted((root / "bu3dfe").rglob("*_F3D.wrl"))[:args.scans], sequences=False)

        list(predictor.predict(scans[:1]))  # imports pyrender and compiles its shaders once, outside the timings
        rows = []
        for name, samples, frames in (("4D sequence (16 of 24 frames)", sequences, 16), ("static scan (BU-3DFE F3D)", scans, 1)):
            records, predict_seconds = timed(lambda s=samples: list(predictor.predict(s)))
            assert all(r["status"] == "ok" for r in records), [r["error"] for r in records if r["status"] != "ok"]
            _, render_seconds = timed(render_only, samples, root / f"render_{frames}")
            rows.append((name, len(samples), predict_seconds, render_seconds))

        print()
        print("| input | samples | predict: samples/s (s per sample) | render_shard alone: s per sample | predict overhead |")
        print("|---|---|---|---|---|")
        for name, count, predict_seconds, render_seconds in rows:
            per_predict, per_render = predict_seconds / count, render_seconds / count
            print(f"| {name} | {count} | {count / predict_seconds:.2f} ({per_predict:.3f} s) | {per_render:.3f} s | "
                  f"{100 * (per_predict / per_render - 1):+.0f} % |")


if __name__ == "__main__":
    main()
