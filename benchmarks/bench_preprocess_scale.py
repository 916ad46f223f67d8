"""Preprocessing at real size: index + render + pack of a generated BU-4DFE-like corpus, projected
to the full release (606 sequences of ~100 frames) on 8 cores.

    .venv/bin/python benchmarks/bench_preprocess_scale.py [--sequences-of 1] [--frames 100]
        [--resolution 173] [--cores 8] [--keep DIR]

Generates one synthetic BU-4DFE subject (6 sequences) at the real frame size (173 grid columns:
~35k vertices, ~4.4 MB VRML per frame, ~100 frames per sequence; ~2.6 GB on disk, removed at the
end unless --keep), then runs each stage exactly as its Snakemake rule does (`smile-vlm index`,
`render` per subject, `pack`) in a child process and reads the child's CPU time (user + system,
getrusage). CPU time, not wall time, because the machine is shared: wall time would also count
other jobs' turns on the cores. Baseline in the same run: the index with `validate: full` (every
frame parsed, the default before `sampled`).

Projection to 606 sequences on N cores, stage by stage, as the workflow schedules them:
  index  one job using every core: its per-frame CPU x 60,600 frames, the checking part (measured
         in-process, sampled mode) / N, plus its start-up;
  render one job per subject (101), N at a time: ceil(101 / N) rounds of one job's CPU time;
  pack   one single-threaded job: its per-sequence CPU x 606, plus its start-up.
Reading from disk is not in CPU time: the note printed at the end gives the bytes each stage reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
FULL_SEQUENCES, FULL_SUBJECTS, FULL_FRAMES_PER_SEQUENCE = 606, 101, 100  # BU-4DFE (docs/datasets.md)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stage(name: str, args: list[str], env: dict | None = None) -> dict:
    """Run ``python -m smile_vlm <args>``; its CPU and wall seconds."""
    cpu, wall = children_cpu(), time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "smile_vlm", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    seconds = {"stage": name, "cpu_s": children_cpu() - cpu, "wall_s": time.perf_counter() - wall}
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return seconds


# What each job imports before its first file: paid once per job, never per frame.
STARTUP_IMPORTS = {
    "index": "import smile_vlm.cli, smile_vlm.index, smile_vlm.readers.vrml",
    "render": "import os; os.environ.setdefault('PYOPENGL_PLATFORM', 'osmesa'); "
              "import smile_vlm.cli, smile_vlm.render, smile_vlm.readers.vrml, pyrender",
    "pack": "import smile_vlm.cli, smile_vlm.store, zarr, PIL.Image",
}


def startup_cpu(stage_name: str) -> float:
    """CPU of a child that only starts Python and imports what the stage's job imports."""
    cpu = children_cpu()
    subprocess.run([sys.executable, "-c", STARTUP_IMPORTS[stage_name]], check=True)
    return children_cpu() - cpu


def check_share(root: Path, settings: dict) -> float:
    """Share of the index's CPU spent checking files (what its worker processes share out); the
    rest (walking the tree, accounting, writing) runs in one process whatever the core count."""
    from unittest import mock

    from smile_vlm import index
    from smile_vlm.index import dataset as indexing

    spent = []
    real = indexing.check_candidates

    def timed(*args, **kwargs):
        start = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.process_time() - start)

    start = time.process_time()
    with mock.patch.object(indexing, "check_candidates", timed):
        index.index_dataset("bu4dfe", root, {**settings, "workers": 1})
    return sum(spent) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences-of", type=int, default=1, help="synthetic subjects (6 sequences each)")
    parser.add_argument("--frames", type=int, default=100, help="frames per sequence")
    parser.add_argument("--resolution", type=int, default=173, help="grid columns of a frame (173 -> ~35k vertices)")
    parser.add_argument("--cores", type=int, default=8, help="cores of the projection")
    parser.add_argument("--keep", help="generate into (or reuse) this folder and keep it")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    from smile_vlm.settings import complete, section_defaults
    from smile_vlm.views import render_views

    render = complete("render", config.get("render"))
    render = {k: v for k, v in render.items() if k != "threads"}  # as jobs.result_settings(config, "render")

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    root, out = folder / "bu4dfe", folder / "results"
    try:
        if not (root / "SYNTHETIC.json").exists():
            from smile_vlm.synth import generate

            started = time.perf_counter()
            generate("bu4dfe", root, {"subjects": {"bu4dfe": args.sequences_of}, "frames": {"bu4dfe": args.frames},
                                      "resolution_4d": args.resolution, "seed": 0})
            print(f"generated in {time.perf_counter() - started:.0f} s")
        frames = sorted(root.rglob("[0-9][0-9][0-9].wrl"))
        frames = [p for p in frames if "BND" not in str(p)]
        corpus_bytes = sum(p.stat().st_size for p in frames)
        n_sequences = len({p.parent for p in frames})
        out.mkdir(parents=True, exist_ok=True)
        from smile_vlm.readers import read_mesh

        mesh = read_mesh(frames[0])
        print(f"corpus: {n_sequences} sequences, {len(frames)} frames, {mesh.n_vertices} vertices and "
              f"{corpus_bytes / len(frames) / 1e6:.2f} MB per frame, {corpus_bytes / 1e9:.2f} GB")

        startup = {name: min(startup_cpu(name) for _ in range(3)) for name in STARTUP_IMPORTS}
        index_settings = {"validate": "sampled", "frames": render["frames"]}
        results = []
        for mode, settings in (("full", {"validate": "full"}), ("sampled", index_settings)):
            results.append(stage(f"index ({mode})", [
                "index", "--dataset", "bu4dfe", "--root", str(root), "--settings", json.dumps(settings),
                "--workers", "1", "--manifest", str(out / f"manifest_{mode}.csv"),
                "--rejects", str(out / f"rejects_{mode}.csv")]))
        checks_share = check_share(root, index_settings)
        manifest = out / "manifest_sampled.csv"
        subjects = sorted(pd.read_csv(manifest, dtype=str)["subject"].unique())
        shards = []
        render_cpu = []
        for subject in subjects:
            shard = out / "views" / subject
            results.append(stage(f"render {subject}", [
                "render", "--manifest", str(manifest), "--dataset", "bu4dfe", "--subject", subject,
                "--out", str(shard), "--settings", json.dumps(render), "--threads", "1"]))
            render_cpu.append(results[-1]["cpu_s"])
            shards.append(str(shard / "index.csv"))
        store = {**section_defaults("store"), **(config.get("store") or {})}
        pack = {"classes": ["anger", "disgust", "fear", "happiness", "sadness", "surprise"], "multi_label": False,
                "views": render_views(render), "render": render, **store}
        results.append(stage("pack", ["pack", "--manifest", str(manifest), "--dataset", "bu4dfe",
                                      "--out", str(out / "store.zarr"), "--settings", json.dumps(pack),
                                      "--shards", *shards]))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    table = pd.DataFrame(results)
    table["startup_cpu_s"] = [startup[name.split()[0]] for name in table["stage"]]
    table["cpu_ms_per_frame"] = (table["cpu_s"] - table["startup_cpu_s"]) * 1e3 / len(frames)
    print("\nmeasured (CPU = user + system of the job's process; a job's start-up, the CPU of importing what "
          "it imports, is left out of the per-frame figure and counted once per job in the projection)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))

    scale = FULL_SEQUENCES / n_sequences
    full_frames = FULL_SEQUENCES * FULL_FRAMES_PER_SEQUENCE
    per_frame = {row.stage: (row.cpu_s - row.startup_cpu_s) / len(frames) for row in table.itertuples()}
    cores = args.cores
    # checking shares out over the cores; the rest of the index runs in one process
    spread = checks_share / cores + 1 - checks_share
    index_s = {mode: startup["index"] + per_frame[f"index ({mode})"] * full_frames * spread
               for mode in ("full", "sampled")}
    render_job = sum(render_cpu) / len(render_cpu) * (FULL_SEQUENCES / FULL_SUBJECTS) / (n_sequences / len(subjects))
    render_s = math.ceil(FULL_SUBJECTS / cores) * render_job
    pack_s = startup["pack"] + per_frame["pack"] * len(frames) * scale
    print(f"\nindex (sampled): {checks_share:.0%} of its CPU checks files (shared out over the cores)")
    print(f"\nprojection: BU-4DFE, {FULL_SEQUENCES} sequences x {FULL_FRAMES_PER_SEQUENCE} frames "
          f"({full_frames} frames, {FULL_SUBJECTS} subjects), {cores} cores")
    rows = [("index", index_s["sampled"], index_s["full"]), ("render", render_s, render_s), ("pack", pack_s, pack_s)]
    print(f"{'stage':<8}{'validate: sampled':>20}{'validate: full':>26}")
    for name, sampled, full in rows:
        print(f"{name:<8}{sampled / 60:>17.1f} min{full / 60:>23.1f} min")
    total_sampled, total_full = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'total':<8}{total_sampled / 60:>17.1f} min{total_full / 60:>23.1f} min")
    sampled_frames = FULL_SEQUENCES * min(int(render["frames"]), FULL_FRAMES_PER_SEQUENCE)
    frame_mb = corpus_bytes / len(frames) / 1e6
    index_gb = (sampled_frames * frame_mb + (full_frames - sampled_frames) * 2 * 0.065536) / 1e3
    print(f"\ndisk reads (not in CPU time): index reads {sampled_frames} frames in full and 2 x 64 KB of the "
          f"other {full_frames - sampled_frames} ({index_gb:.0f} GB; "
          f"validate: full reads all {full_frames * frame_mb / 1e3:.0f} GB); render reads the {sampled_frames} "
          f"sampled frames once ({sampled_frames * frame_mb / 1e3:.0f} GB)")


if __name__ == "__main__":
    main()
