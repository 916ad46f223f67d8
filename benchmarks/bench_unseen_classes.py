"""Zero-shot on a class no fold trained a prompt for, from scratch vs pretrained fold models.

Reads a finished learning-curve workflow folder (benchmarks/bench_learning_curve.py --keep, a
BU-3DFE cell: static scans, protocol levels 3-4) and, for every fold, writes new scans of each
fold's *test* identities showing a facial action the six emotion classes never asked for (e.g.
AU43, eyes closed, or contempt, one-sided AU12+AU14), with the same generator, pose and noise settings as the synthetic dataset, in
its raw format. Each fold model of ``--variants`` (each fine-tuned from a pretraining also at every
WiSE-FT mixing weight of ``--alphas``, smile_vlm.wise) then scores, through smile_vlm.predict, those
scans and the fold's own six-class test scans against seven classes: the six trained emotions
(their prompts from the trained prompt file) plus the new class, prompted by the FACS caption the
pretraining's caption writer gives that action (smile_vlm.synth.captions). Prints, per variant and alpha:
recall and precision of the new class, 7-way accuracy, the 6-way accuracy of the six-class scans
(the argmax over the six trained classes only; at alpha 1 the fold evaluation's number, for
checking) and its change from the same variant at alpha 1, and
how well the new class's probability ranks the new scans above the six-class scans and above the
test identities' neutral scans (AUC; the neutral scans are a control, not a class: a face that
shows no emotion may score high on any non-emotion prompt). The header also gives the text cosine
of the new class's prompts to each trained class's.

    python benchmarks/bench_unseen_classes.py --workdir RUN/bu3dfe-ict-30 --action 43 --alphas 0.5 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

VARIANTS = ("smile_vlm", "smile_vlm_pretrained")
EXPERIMENT = "bu3dfe_subset1"
LEVELS = (3, 4)
# neutral scans are no class here: a control that tells the new action apart from "no emotion"
NEUTRAL = "neutral"  # the protocol's levels: as many new-class scans per identity as each emotion has


def new_class_prompts(action, prompt_file: Path, out: Path, name: str) -> list[str]:
    """A prompt file: the trained file's classes as they are plus ``name``, described by captions
    (of the AU alone, or of the unseen expression's prototype) at the protocol's levels."""
    from smile_vlm.synth.captions import AU_NAMES, EMOTION_ADJECTIVES, caption
    from smile_vlm.synth.expressions import INTENSITY_SCALE, PROTOTYPES

    data = yaml.safe_load(prompt_file.read_text(encoding="utf-8"))
    if isinstance(action, str):
        prototype = PROTOTYPES[action]
        descriptions = [caption({au: w * INTENSITY_SCALE[level] for au, w in prototype.items()}) for level in LEVELS]
        descriptions.append(f"a {EMOTION_ADJECTIVES[action]} face")
    else:
        descriptions = [caption({action: INTENSITY_SCALE[level]}) for level in LEVELS]
        descriptions.append(f"a face with the {AU_NAMES[action]} (AU{action})")
    data["classes"][name] = {"descriptions": descriptions, "synonyms": []}
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return descriptions


def prompt_cosines(prompts: Path, classes: list[str], new: str, text_spec: dict | None) -> dict[str, float]:
    """Cosine, in the frozen text tower's space, of the new class's prompt ensemble to each trained
    class's (``TextBank.class_embeddings``, as prediction builds them): the nearer, the less room
    the image side has to tell them apart."""
    from smile_vlm.models.encoders import load_text_encoder
    from smile_vlm.prompts import TextBank, load_prompts

    names = [*classes, new]
    ensembles = TextBank(load_text_encoder(text_spec), load_prompts(prompts, names), names).class_embeddings()
    return {name: float(ensembles[-1] @ ensembles[k]) for k, name in enumerate(classes)}


def write_new_scans(synthetic: Path, subjects: list[str], action, out: Path) -> list[Path]:
    """Scans of ``subjects`` (their dataset identities) showing only ``action`` (an AU number, or an
    unseen expression's prototype, jittered as the dataset's expressions are), BU-3DFE raw format."""
    from smile_vlm.synth import layouts, writers
    from smile_vlm.synth.expressions import INTENSITY_SCALE, UNSEEN_EXPRESSIONS, expression_weights
    from smile_vlm.synth.motion import random_pose

    summary = json.loads((synthetic / "SYNTHETIC.json").read_text())
    settings = layouts.resolve_settings(summary["settings"])
    order = summary["subjects"]
    stream = 1000 + (9000 + UNSEEN_EXPRESSIONS.index(action) if isinstance(action, str) else action) * 10
    paths = []
    for sid in subjects:
        s_index = order.index(sid)
        model, _ = layouts.make_face(settings, "bu3dfe", s_index, four_d=False)
        for level in LEVELS:
            # a seed stream of its own (the dataset's scans use 1..25), so no scan is repeated
            rng = layouts.rng_for(settings, "bu3dfe", s_index, stream + level)
            if isinstance(action, str):
                weights = expression_weights(action, INTENSITY_SCALE[level], rng, jitter=float(settings["au_jitter"]))
            else:
                weights = {action: min(1.0, INTENSITY_SCALE[level] * float(np.exp(rng.normal(0.0, settings["au_jitter"]))))}
            frame = model.deform(weights, rng, random_pose(rng, float(settings["pose_sigma_deg"])),
                                 float(settings["noise_mm"]))
            base = f"{sid}_{action if isinstance(action, str) else f'AU{action}'}{level:02d}"
            path = out / sid / f"{base}_F3D.wrl"
            writers.write_vrml(path, frame.vertices, model.polygons, model.uv, model.polygon_uv, f"{base}_F3D.bmp")
            writers.write_image(path.with_suffix(".bmp"), model.texture(int(settings["texture_size"])))
            paths.append(path)
    return paths


def fold_scans(synthetic: Path, subjects: list[str]) -> list[tuple[Path, str]]:
    """The fold's six-class test scans of the protocol's levels and its neutral scans, with labels."""
    summary = json.loads((synthetic / "SYNTHETIC.json").read_text())
    return [(synthetic / s["subject"] / f"{s['sample_id']}_F3D.wrl", s["label"]) for s in summary["samples"]
            if s["subject"] in subjects and (s["label"] == NEUTRAL or int(s["intensity"]) in LEVELS)]


def scores(scored: dict, classes: list[str], labels: list[str], new: str, trained: list[str]) -> dict:
    """Metrics of one fold model from its Predictor.score output (rows: the scans of ``labels``)."""
    probabilities = scored["probabilities"]
    records = [{"probabilities": dict(zip(classes, row))} for row in probabilities]
    top = [classes[k] for k in scored["scores"].argmax(axis=1)]
    six = [max(trained, key=lambda c: r["probabilities"][c]) for r in records]
    is_new = np.array([label == new for label in labels])
    neutral = np.array([label == NEUTRAL for label in labels])
    said_new = np.array([t == new for t in top])
    old = ~is_new & ~neutral
    new_probability = np.array([r["probabilities"][new] for r in records])
    called = pd.Series([t for t, n in zip(top, is_new) if n]).value_counts()
    return {
        "auc": auc(new_probability[is_new], new_probability[old]),
        "auc_neutral": auc(new_probability[is_new], new_probability[neutral]),
        "called": {str(k): int(v) for k, v in called.items()},
        "recall": float(said_new[is_new].mean()),
        "precision": float(said_new[is_new].sum() / said_new[is_new | old].sum()) if said_new[is_new | old].any() else float("nan"),
        "false_new": float(said_new[old].mean()),
        "neutral_new": float(said_new[neutral].mean()),
        "acc7": float(np.mean([t == label for t, label, o in zip(top, labels, is_new | old) if o])),
        "acc6": float(np.mean([s == label for s, label, o in zip(six, labels, old) if o])),
        "n_new": int(is_new.sum()), "n_old": int(old.sum()), "n_neutral": int(neutral.sum()),
    }


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a new-class scan gets a higher new-class probability than a six-class scan
    (ties count half): 0.5 = the new prompt's score carries no information, whatever the argmax."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def mean_std(values: list[float]) -> str:
    values = [100.0 * v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def called_summary(rows: list[dict]) -> str:
    """What the new-class scans were called, summed over folds, most often first."""
    total: dict[str, int] = {}
    for row in rows:
        for name, count in row["called"].items():
            total[name] = total.get(name, 0) + count
    return ", ".join(f"{name} {count}" for name, count in sorted(total.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a BU-3DFE cell folder of bench_learning_curve.py --keep")
    parser.add_argument("--action", default="43",
                        help="the new class: a FACS action unit the generator models, or an expression no dataset "
                             "shows (smile_vlm.synth.expressions.UNSEEN_EXPRESSIONS, e.g. contempt)")
    parser.add_argument("--name", help="class name (default: the action's FACS name)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="fold-model variants of --workdir")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0],
                        help="WiSE-FT mixing weights (smile_vlm.wise) of the variants fine-tuned from a pretraining")
    args = parser.parse_args()

    from bench_au_detection import Scorer
    from smile_vlm.prompts import prompt_file
    from smile_vlm.synth.captions import AU_NAMES
    from smile_vlm.synth.expressions import UNSEEN_EXPRESSIONS

    action = int(args.action) if args.action.isdigit() else args.action
    if action not in AU_NAMES and action not in UNSEEN_EXPRESSIONS:
        parser.error(f"--action {args.action}: the generator models AUs {sorted(AU_NAMES)} and the unseen "
                     f"expressions {list(UNSEEN_EXPRESSIONS)}")
    if any(not 0.0 <= a <= 1.0 for a in args.alphas):
        parser.error("--alphas: mixing weights from 0 to 1")
    workdir = Path(args.workdir).resolve()
    folds_csv = workdir / "results" / EXPERIMENT / "folds.csv"
    if not folds_csv.is_file():
        parser.error(f"--workdir {workdir}: no {folds_csv.relative_to(workdir)} (run a --dataset bu3dfe learning curve with --keep)")
    os.chdir(workdir)  # fold models name their training store relative to the workflow folder
    folds = pd.read_csv(folds_csv, dtype={"subject": str})
    synthetic = workdir / "results" / "synthetic" / "bu3dfe"
    new = args.name or (action if isinstance(action, str) else AU_NAMES[action].replace(" ", "_"))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unseen-class-") as tmp:
        tmp = Path(tmp)
        first_model = workdir / "results" / EXPERIMENT / "models" / args.variants[0] / "fold0" / "model.pt"
        import torch

        state = torch.load(first_model, map_location="cpu", weights_only=True)
        trained = list(state["classes"])
        prompts = tmp / "prompts.yaml"
        descriptions = new_class_prompts(action, prompt_file(state["settings"]["prompts"]["name"]), prompts, new)
        classes = [*trained, new]
        cosines = prompt_cosines(prompts, trained, new, state["settings"]["encoders"].get("text"))
        runs = [(variant, alpha) for variant in args.variants
                for alpha in (args.alphas if fine_tuned_from_pretraining(workdir, variant) else [1.0])]
        results = {run: [] for run in runs}
        for fold in sorted(folds["fold"].unique()):
            test = sorted(folds[(folds["fold"] == fold) & (folds["split"] == "test")]["subject"].unique())
            scans = fold_scans(synthetic, test) + [(p, new) for p in write_new_scans(synthetic, test, action, tmp / f"fold{fold}")]
            score = Scorer([p for p, _ in scans], tmp / f"renders{fold}")  # rendered once per fold
            for variant, alpha in runs:
                model = workdir / "results" / EXPERIMENT / "models" / variant / f"fold{fold}" / "model.pt"
                scored = score(model, classes, prompts, wise_alpha=alpha)
                results[(variant, alpha)].append(scores(scored, classes, [label for _, label in scans], new, trained))
    seconds = time.perf_counter() - started

    first = results[runs[0]]
    n_new, n_old, n_neutral = (sum(r[key] for r in first) for key in ("n_new", "n_old", "n_neutral"))
    shown = f"the {action} prototype" if isinstance(action, str) else f"AU{action} alone"
    print(f"{workdir.name}: new class {new!r} ({shown}, levels {LEVELS}), {n_new} new-class scans of "
          f"the folds' test identities + {n_old} six-class test scans + {n_neutral} neutral scans (control, no class), {len(first)} folds; "
          f"{len(trained) + 1} classes (chance {100 / (len(trained) + 1):.1f} %); {seconds:.0f} s. New-class prompts: {descriptions}; "
          f"their text cosine to each class's prompts: {', '.join(f'{k} {v:.2f}' for k, v in cosines.items())}\n")
    print("| variant | WiSE-FT alpha | new-class recall per fold (%) | new-class recall (%) | new-class precision (%) | "
          "six-class scans called new (%) | neutral scans called new (%) | AUC of the new-class probability: "
          "new vs six-class scans | new vs neutral scans | new-class scans called (all folds) | "
          "7-way accuracy (%) | 6-way accuracy of the six-class scans (%) | 6-way change from alpha 1 (points) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (variant, alpha), rows in results.items():
        plain = results.get((variant, 1.0))
        change = (f"{100 * (statistics.mean(r['acc6'] for r in rows) - statistics.mean(r['acc6'] for r in plain)):+.1f}"
                  if plain else "n/a")
        precision = [r["precision"] for r in rows if not np.isnan(r["precision"])]
        per_fold = ", ".join(f"{100 * r['recall']:.1f}" for r in rows)
        aucs = [r["auc"] for r in rows]
        aucs_neutral = [r["auc_neutral"] for r in rows]
        print(f"| {variant} | {alpha:g} | {per_fold} | {mean_std([r['recall'] for r in rows])} | "
              f"{mean_std(precision) if precision else 'none called new'} | {mean_std([r['false_new'] for r in rows])} | "
              f"{mean_std([r['neutral_new'] for r in rows])} | "
              f"{statistics.mean(aucs):.2f} ({', '.join(f'{a:.2f}' for a in aucs)}) | "
              f"{statistics.mean(aucs_neutral):.2f} ({', '.join(f'{a:.2f}' for a in aucs_neutral)}) | "
              f"{called_summary(rows)} | {mean_std([r['acc7'] for r in rows])} | {mean_std([r['acc6'] for r in rows])} | {change} |")


def fine_tuned_from_pretraining(workdir: Path, variant: str) -> bool:
    """Whether the variant's fold models started from a vision.pt (only those have a WiSE-FT line)."""
    import torch

    model = workdir / "results" / EXPERIMENT / "models" / variant / "fold0" / "model.pt"
    if not model.is_file():
        raise SystemExit(f"--workdir {workdir}: no {model.relative_to(workdir)} (is {variant!r} a variant of this cell?)")
    state = torch.load(model, map_location="cpu", weights_only=True)
    return bool(((state["variant"].get("vision") or {}).get("init")))


if __name__ == "__main__":
    main()
