"""Zero-shot accuracy from scratch vs from the FACS-captioned pretraining, with few training identities.

One command measures a grid: for each ``--subjects`` value it runs the Snakemake workflow on a
synthetic dataset (``--dataset bu4dfe``: 4D sequences; ``bu3dfe``: static scans, protocol levels
3-4) written with ``--face-source`` faces (``ict``: ICT-FaceKit, real scanned geometry;
``procedural``: the embedded parametric face), with two variants in one table: ``smile_vlm``
(compact CNN from random weights) and ``smile_vlm_pretrained`` (the same, ``vision.init`` = the
pretraining's vision.pt). The pretraining is built once, in its own workflow folder, and every
grid cell points ``vision.init`` at it (or at ``--pretrained PATH``, a vision.pt built before with
the same settings). Its identities are never an evaluation identity (see smile_vlm.pretrain).
Training identities per fold: subjects * (folds - 1) / folds. Prints a markdown table: accuracy
per fold, mean +- std, the workflow's wall time per cell, and the pretraining's cost and monitored
vl-align. ``--au-tables`` and ``--variation`` choose how the evaluated dataset realises its
emotions (synthetic.au_tables, synthetic.variation); the pretraining's corpus draws its emotions
from ``pretrain.au_tables`` (``--pretrain '{"au_tables": ["emfacs", "facs_guide"]}'``; default:
emfacs alone). The table says whether the evaluated tables are held out (none of them in the
pretraining's) or the pretraining's own, and which of its options differ from their defaults:

    python benchmarks/bench_learning_curve.py --ict-dir PATH/FaceXModel --pretrain '{"au_tables": ["emfacs", "facs_guide"]}' --au-tables du2014

    python benchmarks/bench_learning_curve.py --ict-dir PATH/FaceXModel --dataset bu3dfe --subjects 15 30 --folds 3

``--head-motion`` (synthetic.head_motion.kind) and ``--registration`` (render.registration) set how
the head moves inside the 4D sequences and whether the frames are registered; ``--scratch-only``
skips the pretraining and trains smile_vlm alone.
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
# the experiment each dataset's grid cell trains: BU-3DFE's is the paper's subset 1 (levels 3-4)
EXPERIMENTS = {"bu4dfe": "bu4dfe", "bu3dfe": "bu3dfe_subset1"}
DEFAULT_LEVELS = (3, 4)  # BU-3DFE: the two highest intensities, the paper's subset 1
PRETRAIN_TARGET = "results/pretrain/default/vision.pt"


def common_overlay(args) -> dict:
    """Settings the pretraining depends on, shared by its own folder and every grid cell."""
    overlay = {"render": {"size": args.render_size, "frames": min(args.frames, 16)}}
    if args.ict_dir:
        overlay["pretrain"] = {"ict_dir": str(Path(args.ict_dir).resolve()), **json.loads(args.pretrain)}
    return overlay


def cell_overlay(args, subjects: int, init: Path | None) -> dict:
    ict_dir = str(Path(args.ict_dir).resolve()) if args.face_source == "ict" else None
    protocol = {"folds": args.folds, "subjects": "all"}
    if args.dataset == "bu3dfe":
        protocol["levels"] = list(args.levels)
    overlay = common_overlay(args)
    overlay["render"]["registration"] = args.registration
    synthetic = {"face_source": args.face_source, "ict_dir": ict_dir, "head_motion": {"kind": args.head_motion},
                 "subjects": {args.dataset: subjects}, "frames": {"bu4dfe": args.frames},
                 "variation": json.loads(args.variation)}
    if args.au_tables:
        synthetic["au_tables"] = args.au_tables
    return {
        **overlay,
        "synthetic": synthetic,
        "experiments": {EXPERIMENTS[args.dataset]: {"protocol": protocol, "variants": variants(init)}},
        "variants": {} if init is None else {"smile_vlm_pretrained": {
            "base": "smile_vlm", **json.loads(args.variant), "vision": {"init": str(init)}}},
        **({"train": json.loads(args.train)} if json.loads(args.train) else {}),
    }


def level_tag(args) -> str:
    """The cell folder's suffix for BU-3DFE levels other than the paper's subset 1 (none for it)."""
    levels = sorted(args.levels)
    return "" if args.dataset != "bu3dfe" or tuple(levels) == DEFAULT_LEVELS else "-levels" + "".join(map(str, levels))


def variants(init: Path | None) -> list[str]:
    """Both variants, or only the one from scratch when there is no pretraining (--scratch-only)."""
    return list(VARIANTS) if init is not None else [VARIANTS[0]]


def run_workflow(workdir: Path, overlay: dict, target: str, cores: int) -> float:
    """Runs Snakemake in workdir for target; returns its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), str(workdir / "overlay.yaml"),
               "--cores", str(cores), target]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (workdir / "snakemake.out").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit((result.stdout + result.stderr)[-4000:])
    return seconds


def fold_accuracies(workdir: Path, experiment: str, variant: str) -> list[float]:
    paths = sorted((workdir / "results" / experiment / "eval" / variant).glob("fold*.json"))
    if not paths:
        sys.exit(f"no evaluations of {variant} under {workdir}/results/{experiment}/eval")
    return [100.0 * json.loads(p.read_text())["accuracy"] for p in paths]


def test_samples(workdir: Path, experiment: str) -> int:
    paths = sorted((workdir / "results" / experiment / "eval" / VARIANTS[0]).glob("fold*.json"))
    return sum(int(json.loads(p.read_text())["n_test"]) for p in paths)


def summary(accuracies: list[float]) -> str:
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return f"{statistics.mean(accuracies):.1f} ± {spread:.1f}"


# What the header line states already, or changes only speed: the rest of the pretraining's
# settings are named when they differ from the schema's defaults.
STATED_KEYS = ("identities", "samples_per_identity", "epochs", "batch_size", "render_size", "threads", "ict_dir")


def corpus_options(vision: dict) -> dict:
    """The pretraining's settings (corpus options and the rest, e.g. ``au_align``) that differ from
    the schema's defaults (as it ran them), but for STATED_KEYS."""
    from smile_vlm.settings import PRETRAIN_DEFAULTS as defaults
    from smile_vlm.settings import section_defaults

    ran = json.loads(vision["settings"])["pretrain"]
    # augment {} means its own defaults, which the workflow's pretraining writes out in full
    augment = section_defaults("pretrain", "augment")
    defaults = {**defaults, "augment": {**augment, **defaults["augment"]}}
    ran = {**ran, "augment": {**augment, **ran.get("augment", {})}}
    return {key: ran.get(key, default) for key, default in sorted(defaults.items())
            if key not in STATED_KEYS and ran.get(key, default) != default}


def realisation_note(vision: dict, evaluated: list[str]) -> str:
    """Whether the evaluated dataset's AU tables are held out from the pretraining's corpus."""
    from smile_vlm.settings import PRETRAIN_DEFAULTS

    used = json.loads(vision["settings"])["pretrain"].get("au_tables", PRETRAIN_DEFAULTS["au_tables"])
    if not set(used) & set(evaluated):
        return f"held-out realisation: evaluated on {' + '.join(evaluated)}, pretrained on {' + '.join(used)}"
    return f"the pretraining's own realisation: evaluated on {' + '.join(evaluated)}, pretrained on {' + '.join(used)}"


def describe_pretraining(vision_pt: Path, benchmark_tsv: Path | None, evaluated: list[str]) -> str:
    import torch

    vision = torch.load(vision_pt, weights_only=True)
    history = vision["history"]
    cost = ""
    if benchmark_tsv is not None and benchmark_tsv.exists():
        cost = f", job {float(benchmark_tsv.read_text().splitlines()[1].split(chr(9))[0]):.0f} s"
    options = corpus_options(vision)
    return (f"pretraining {vision_pt}: {vision['corpus']['samples']} samples of "
            f"{len(vision['corpus']['subjects'])} identities, {len(history) - 1} epochs{cost}; "
            f"monitored vl-align {history[0]['monitor_vl_align']:.3f} -> {history[-1]['monitor_vl_align']:.3f}; "
            f"options {json.dumps(options) if options else 'the defaults'}\n{realisation_note(vision, evaluated)}")


def main() -> None:
    from smile_vlm.synth.au_tables import TABLES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ict-dir", help="ICT-FaceKit FaceXModel/ folder (pretraining and --face-source ict)")
    parser.add_argument("--scratch-only", action="store_true", help="no pretraining: train only smile_vlm")
    parser.add_argument("--head-motion", choices=("drift", "drift_noise", "jitter"), default="drift",
                        help="synthetic.head_motion.kind of the 4D sequences")
    parser.add_argument("--registration", choices=("auto", "landmarks", "icp", "none"), default="auto",
                        help="render.registration")
    parser.add_argument("--dataset", choices=sorted(EXPERIMENTS), default="bu4dfe")
    parser.add_argument("--levels", type=int, nargs="+", choices=(1, 2, 3, 4), default=list(DEFAULT_LEVELS),
                        help="BU-3DFE intensity levels evaluated (3 4: the paper's subset 1; 1 2 3 4: subset 2)")
    parser.add_argument("--face-source", choices=("ict", "procedural"), default="ict")
    parser.add_argument("--subjects", type=int, nargs="+", default=[15], help="synthetic subjects, one grid cell each")
    parser.add_argument("--folds", type=int, default=3, help="subject-independent folds")
    parser.add_argument("--frames", type=int, default=12, help="frames per synthetic 4D sequence")
    parser.add_argument("--render-size", type=int, default=128, help="render.size")
    parser.add_argument("--pretrain", default="{}", help="overrides of the pretrain section, JSON")
    parser.add_argument("--pretrained", metavar="VISION_PT",
                        help="reuse this vision.pt (built with the same pretrain and render settings) instead of pretraining")
    parser.add_argument("--au-tables", nargs="+", choices=sorted(TABLES),
                        help="emotion -> AU tables of the evaluated dataset (default: the schema's)")
    parser.add_argument("--variation", default="{}", help="synthetic.variation of the evaluated dataset, JSON")
    parser.add_argument("--train", default="{}", help="overrides of the train section for both variants, JSON "
                                                     "(e.g. '{\"epochs\": 30}')")
    parser.add_argument("--variant", default="{}", help="settings of the pretrained variant besides its init, JSON "
                                                       "(e.g. '{\"init_head\": true}')")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args()
    if min(args.subjects) < args.folds:
        parser.error(f"--subjects {min(args.subjects)} is fewer than --folds {args.folds}: give each fold a test subject")
    if not args.ict_dir and (args.face_source == "ict" or not args.scratch_only):
        parser.error("--ict-dir is needed for the pretraining and for --face-source ict (or give --scratch-only)")
    if args.pretrained and not Path(args.pretrained).is_file():
        parser.error(f"--pretrained {args.pretrained}: no such file")

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="learning-curve-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.scratch_only:
        vision_pt = benchmark_tsv = None
    elif args.pretrained:
        vision_pt, benchmark_tsv = Path(args.pretrained).resolve(), None
    else:
        run_workflow(root / "pretrain", common_overlay(args), PRETRAIN_TARGET, args.cores)
        vision_pt = (root / "pretrain" / PRETRAIN_TARGET).resolve()
        benchmark_tsv = root / "pretrain/logs/benchmarks/pretrain/default.tsv"

    experiment = EXPERIMENTS[args.dataset]
    rows = []
    for subjects in args.subjects:
        tables = f"-{'+'.join(args.au_tables)}" if args.au_tables else ""
        workdir = root / f"{args.dataset}-{args.face_source}{tables}-{subjects}-{args.head_motion}-{args.registration}{level_tag(args)}"
        seconds = run_workflow(workdir, cell_overlay(args, subjects, vision_pt),
                               f"results/tables/{experiment}.csv", args.cores)
        scratch = fold_accuracies(workdir, experiment, VARIANTS[0])
        pretrained = fold_accuracies(workdir, experiment, VARIANTS[1]) if vision_pt else [float("nan")]
        rows.append(f"| {subjects} | {subjects * (args.folds - 1) / args.folds:.3g} | {test_samples(workdir, experiment)} | "
                    f"{', '.join(f'{a:.1f}' for a in scratch)} | {summary(scratch)} | "
                    f"{', '.join(f'{a:.1f}' for a in pretrained)} | {summary(pretrained)} | {seconds:.0f} |")

    levels = (f", protocol levels {', '.join(map(str, sorted(args.levels)))}" if args.dataset == "bu3dfe"
              else f", {args.frames} frames per sequence")
    realised = f", AU tables {' + '.join(args.au_tables)}" if args.au_tables else ""
    if json.loads(args.variation):
        realised += f", variation {args.variation}"
    for name, given in (("train", args.train), ("pretrained variant", args.variant)):
        if json.loads(given):
            realised += f", {name} {given}"
    print(f"synthetic {args.dataset}, {args.face_source} faces{levels}{realised}, {args.folds} subject-independent folds, "
          f"{args.render_size} px renders, head motion {args.head_motion}, registration {args.registration}")
    from smile_vlm.settings import section_defaults

    evaluated = args.au_tables or section_defaults("synthetic")["au_tables"]
    print((describe_pretraining(vision_pt, benchmark_tsv, evaluated) if vision_pt else "no pretraining (--scratch-only)")
          + "\n")
    print("| subjects | training identities per fold | test samples (all folds) | from scratch, per fold (%) | "
          "from scratch (%) | pretrained, per fold (%) | pretrained (%) | workflow s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
