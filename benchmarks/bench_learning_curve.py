"""Zero-shot accuracy from scratch vs from the FACS-captioned pretraining, with few training identities.

Runs the Snakemake workflow in a temporary folder on synthetic BU-4DFE written with the
ICT-FaceKit face source (real scanned geometry; evaluation identities are never pretraining
identities, see smile_vlm.pretrain), with two variants in one table: ``smile_vlm`` (compact CNN
from scratch) and ``smile_vlm_pretrained`` (the same, ``vision.init`` = the pretraining's
vision.pt). ``--subjects`` and ``--folds`` set the training identities per fold:
subjects * (folds - 1) / folds. Prints a markdown table: accuracy per fold, mean +- std, and the
pretraining's cost and monitored vl-align.

    python benchmarks/bench_learning_curve.py --ict-dir PATH/FaceXModel --subjects 15 --folds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("smile_vlm", "smile_vlm_pretrained")


def overlay(args) -> dict:
    pretrain = {"ict_dir": str(Path(args.ict_dir).resolve()), **json.loads(args.pretrain)}
    return {
        "synthetic": {"face_source": "ict", "ict_dir": str(Path(args.ict_dir).resolve()),
                      "subjects": {"bu4dfe": args.subjects}, "frames": {"bu4dfe": args.frames}},
        "render": {"size": args.render_size, "frames": min(args.frames, 16)},
        "experiments": {"bu4dfe": {"protocol": {"folds": args.folds}, "variants": list(VARIANTS)}},
        "variants": {"smile_vlm_pretrained": {"base": "smile_vlm",
                                              "vision": {"init": "results/pretrain/default/vision.pt"}}},
        "pretrain": pretrain,
    }


def fold_accuracies(workdir: Path, variant: str) -> list[float]:
    paths = sorted((workdir / "results" / "bu4dfe" / "eval" / variant).glob("fold*.json"))
    return [100.0 * json.loads(p.read_text())["accuracy"] for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict-dir", required=True, help="ICT-FaceKit FaceXModel/ folder")
    parser.add_argument("--subjects", type=int, default=15, help="synthetic BU-4DFE subjects")
    parser.add_argument("--folds", type=int, default=3, help="subject-independent folds")
    parser.add_argument("--frames", type=int, default=12, help="frames per synthetic sequence")
    parser.add_argument("--render-size", type=int, default=128, help="render.size")
    parser.add_argument("--pretrain", default="{}", help="overrides of the pretrain section, JSON")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args()

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="learning-curve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay(args)))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), str(workdir / "overlay.yaml"),
               "--cores", str(args.cores), "results/tables/bu4dfe.csv"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit((result.stdout + result.stderr)[-4000:])

    import torch

    vision = torch.load(workdir / "results/pretrain/default/vision.pt", weights_only=True)
    history = vision["history"]
    pretrain_seconds = float(
        (workdir / "logs/benchmarks/pretrain/default.tsv").read_text().splitlines()[1].split("\t")[0])
    train_ids = args.subjects * (args.folds - 1) // args.folds
    print(f"synthetic BU-4DFE, ICT-FaceKit faces: {args.subjects} subjects, {args.folds} folds "
          f"(~{train_ids} training identities per fold); workflow {seconds:.0f} s")
    print(f"pretraining: {vision['corpus']['samples']} samples of {len(vision['corpus']['subjects'])} identities, "
          f"{len(history) - 1} epochs, {pretrain_seconds:.0f} s; monitored vl-align "
          f"{history[0]['monitor_vl_align']:.3f} -> {history[-1]['monitor_vl_align']:.3f}\n")
    print("| variant | zero-shot accuracy per fold (%) | mean ± std (%) |")
    print("|---|---|---|")
    for variant in VARIANTS:
        accuracies = fold_accuracies(workdir, variant)
        if not accuracies:
            sys.exit(f"no evaluations of {variant} under {workdir}/results/bu4dfe/eval")
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"| {variant} | {', '.join(f'{a:.1f}' for a in accuracies)} | "
              f"{statistics.mean(accuracies):.1f} ± {spread:.1f} |")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
