"""4D accuracy before/after a rendering change: the BU-4DFE table (SMILE-VLM only) of one code tree.

Runs ``snakemake results/tables/bu4dfe.csv`` of the code tree ``--code`` (its Snakefile, its
config.yaml and its ``smile_vlm`` package, through PYTHONPATH) in a fresh working directory, on
the procedural face or on ICT-FaceKit faces, with the same seeds as the default configuration,
then writes the per-fold zero-shot accuracies, their mean and standard deviation, the dynamic
images' boundary-band energy ratio and the wall time as JSON.

Compare two versions of the code by running the script once per tree, e.g. the old code from a
``git worktree add ../smile-vlm-before <commit>`` and the current checkout::

    nice -n 10 .venv/bin/python benchmarks/bench_dynamic_support.py --code ../smile-vlm-before \
        --workdir wd/before-ict --face-source ict --ict-dir <FaceXModel folder> --out before-ict.json
    nice -n 10 .venv/bin/python benchmarks/bench_dynamic_support.py --code . \
        --workdir wd/after-ict --face-source ict --ict-dir <FaceXModel folder> --out after-ict.json
    .venv/bin/python benchmarks/bench_dynamic_support.py --compare before-ict.json after-ict.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

TARGET = "results/tables/bu4dfe.csv"
ABLATION = "results/ablation/bu4dfe.csv"  # Fig. 2: the loss ablations on the configured folds


def overlay(face_source: str, ict_dir: str | None, folds: int | None) -> dict:
    data: dict = {"synthetic": {"face_source": face_source},
                  "experiments": {"bu4dfe": {"variants": ["smile_vlm"]}}}
    if ict_dir:
        data["synthetic"]["ict_dir"] = str(Path(ict_dir).resolve())
    if folds:
        data["experiments"]["bu4dfe"]["protocol"] = {"folds": folds}
    return data


def run_workflow(code: Path, workdir: Path, overlay_data: dict, cores: int, targets: list[str]) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(code / "config.yaml", workdir / "config.yaml")
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay_data))
    command = [sys.executable, "-m", "snakemake", "-s", str(code / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), str(workdir / "overlay.yaml"),
               "--cores", str(cores), *targets]
    env = dict(os.environ, PYTHONPATH=str(code))  # this tree's smile_vlm, not the installed one
    start = time.perf_counter()
    with open(workdir / "snakemake.out", "a") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def boundary_energy_ratio(views_dir: Path, band_px: int = 4) -> float:
    """Median over the dynamic images of (mean |DI - background| in the support's outer band) /
    (the same in its interior). The support is what differs from the background value, which the
    min-max scaling maps to one grey level; a ratio > 1 means edges dominate the expression."""
    from PIL import Image
    from scipy import ndimage

    ratios = []
    for path in sorted(views_dir.glob("*/*_v0.png")):
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        background = np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]))
        deviation = np.abs(image - background)
        support = ndimage.binary_fill_holes(ndimage.binary_closing(deviation > 0, iterations=2))
        interior = ndimage.binary_erosion(support, iterations=band_px)
        band = support & ~interior
        if interior.sum() < 100 or band.sum() == 0:
            continue
        ratios.append(deviation[band].mean() / max(deviation[interior].mean(), 1e-9))
    return float(np.median(ratios)) if ratios else float("nan")


def accuracies(table_csv: Path) -> list[float]:
    table = pd.read_csv(table_csv, dtype={"fold": str, "method": str})
    ours = table[(table["source"] == "ours") & (table["method"] == "smile_vlm") & (table["fold"] != "mean")]
    return [float(a) for a in ours.sort_values("fold", key=lambda f: f.astype(int))["accuracy"]]


def ablation_means(table_csv: Path) -> dict[str, float]:
    table = pd.read_csv(table_csv, dtype={"fold": str, "method": str})
    means = table[(table["source"] == "ours") & (table["fold"] == "mean")]
    return {str(m): float(a) for m, a in zip(means["method"], means["accuracy"])}


def compare(paths: list[str]) -> None:
    print("| code | face | folds | SMILE-VLM accuracy (mean ± std) | boundary/interior energy | wall |")
    print("|---|---|---|---|---|---|")
    results = [json.loads(Path(path).read_text()) for path in paths]
    for r in results:
        print(f"| {r['label']} | {r['face_source']} | {len(r['accuracy'])} | {r['mean']:.1f} ± "
              f"{r['std']:.1f} % | {r['boundary_energy_ratio']:.2f} | {r['wall_s'] / 60:.1f} min |")
    ablations = [r for r in results if r.get("ablation")]
    if ablations:
        variants = list(ablations[0]["ablation"])
        print()
        print("| code | face | " + " | ".join(variants) + " |")
        print("|---|---|" + "---|" * len(variants))
        for r in ablations:
            cells = " | ".join(f"{r['ablation'][v]:.1f} %" for v in variants)
            print(f"| {r['label']} | {r['face_source']} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, help="repository root whose workflow and package to run")
    parser.add_argument("--workdir", type=Path, help="fresh Snakemake working directory")
    parser.add_argument("--face-source", choices=["procedural", "ict"], default="procedural")
    parser.add_argument("--ict-dir", help="ICT-FaceKit FaceXModel/ folder (face-source ict)")
    parser.add_argument("--folds", type=int, help="override the protocol's 10 folds (quick checks)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--ablation", action="store_true",
                        help="also build the Fig. 2 loss ablation (results/ablation/bu4dfe.csv)")
    parser.add_argument("--label", help="name of this code version in the output (default: --code)")
    parser.add_argument("--out", type=Path, help="JSON file for the numbers")
    parser.add_argument("--compare", nargs="+", metavar="JSON", help="print a markdown table of earlier outputs")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return
    if args.code is None or args.workdir is None or args.out is None:
        parser.error("--code, --workdir and --out are required (or --compare)")
    if args.face_source == "ict" and not args.ict_dir:
        parser.error("--face-source ict needs --ict-dir")
    code = args.code.resolve()
    targets = [TARGET, ABLATION] if args.ablation else [TARGET]
    wall = run_workflow(code, args.workdir.resolve(), overlay(args.face_source, args.ict_dir, args.folds),
                        args.cores, targets)
    acc = accuracies(args.workdir / TARGET)
    result = {"label": args.label or str(args.code), "face_source": args.face_source, "accuracy": acc,
              "mean": float(np.mean(acc)), "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
              "boundary_energy_ratio": boundary_energy_ratio(args.workdir / "results" / "bu4dfe" / "views"),
              "wall_s": wall}
    if args.ablation:
        result["ablation"] = ablation_means(args.workdir / ABLATION)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
