"""Action units as a task: per-AU detection by prompt on held-out generated faces.

Writes, for ``--identities`` new identities of ``--face-source`` (subject numbers from
HELD_OUT_SUBJECT on: no synthetic dataset draws them, and the pretraining draws from another key
space, smile_vlm.pretrain), one BU-3DFE scan per action unit the pretraining was taught
(synth.expressions.ACTION_UNITS), that unit alone at a random weight in the FACS C-E range (0.5-1; the
dataset's pose and noise), and NEUTRAL_SCANS neutral scans per identity. Every model then scores
every scan, through smile_vlm.predict, against one prompt class per AU, prompted by the
pretraining's own captions of that AU alone (synth.captions: "a 3D face showing marked eyes closed
(AU43).", at weights 0.6, 0.8 and 1, ensembled), plus a class for its absence (the caption of a
neutral face). Per AU and model:

* AUC: how well the AU class's zero-shot probability (predict's: softmax over all the classes of
  the model's logit scale times the cosines) ranks the scans showing the AU above all others (the
  other AUs and the neutral scans);
* F1 of the AU being the scan's top class among all AU prompts and the absence prompt (each scan
  shows one AU or none, so the argmax is its detection).

Models: the pretraining's vision.pt (``--pretrained``, one or more, each asked directly, on the
same scans) and, with ``--workdir`` (a
BU-3DFE cell of bench_learning_curve.py --keep), every fold model of ``--variants``, each at every
WiSE-FT mixing weight of ``--alphas`` (smile_vlm.wise; 1 = the fine-tuned model as trained; a
variant trained from scratch only at 1). Prints markdown: one row per model and alpha (mean
AUC and F1 over AUs, mean over folds) and one row per AU.

``--corpus-check N`` also asks each pretrained encoder about the static samples of two corpora
made by its own settings (``smile_vlm.corpus``): the one it trained on (the ``corpus.npz`` beside
it when its digest matches, else rebuilt) and a fresh one of N new identities (another seed).
The same AU prompts score them; a sample shows an AU when its caption names it. Mean AUC over
AUs on both says whether the encoder learned action units or its training identities.

    python benchmarks/bench_au_detection.py --pretrained PRE/vision.pt --face-source ict --ict-dir PATH \\
        --workdir RUN/bu3dfe-ict-30 --variants smile_vlm_pretrained --alphas 0 0.5 1
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

from bench_unseen_classes import auc, fine_tuned_from_pretraining

EXPERIMENT = "bu3dfe_subset1"
HELD_OUT_SUBJECT = 100_000  # synthetic datasets number their subjects 0..N-1 under the same seed key
NEUTRAL_SCANS = 3
WEIGHTS = (0.5, 1.0)  # FACS C (marked) to E (maximum)
ABSENT = "no_action_unit"


def unit_class(au) -> str:
    return f"AU{au}"


def write_prompts(units, out: Path) -> list[str]:
    """A prompt file: one class per AU (its captions alone: the pretraining's action-unit phrases,
    smile_vlm.au_align) and the absence class; its classes."""
    from smile_vlm.au_align import NEUTRAL, phrase_texts

    classes = {unit_class(au): {"descriptions": phrase_texts(au), "synonyms": []} for au in units}
    classes[ABSENT] = {"descriptions": phrase_texts(NEUTRAL), "synonyms": []}
    out.write_text(yaml.safe_dump({"classes": classes}, sort_keys=False), encoding="utf-8")
    return list(classes)


def held_out_scans(face_source: str, ict_dir: str | None, identities: int, units, out: Path) -> list[tuple[Path, object]]:
    """(scan, the AU it shows or None) for every held-out identity, BU-3DFE raw format."""
    from smile_vlm.synth import layouts, writers
    from smile_vlm.synth.motion import random_pose

    settings = layouts.resolve_settings({"face_source": face_source, "ict_dir": ict_dir})
    scans = []
    for k in range(identities):
        s_index = HELD_OUT_SUBJECT + k
        model, _ = layouts.make_face(settings, "bu3dfe", s_index, four_d=False)
        texture = model.texture(int(settings["texture_size"]))
        shown = [None] * NEUTRAL_SCANS + list(units)
        for j, au in enumerate(shown):
            rng = layouts.rng_for(settings, "bu3dfe", s_index, j + 1)
            weights = {} if au is None else {au: float(rng.uniform(*WEIGHTS))}
            frame = model.deform(weights, rng, random_pose(rng, float(settings["pose_sigma_deg"])),
                                 float(settings["noise_mm"]))
            base = f"H{k:03d}_{'NE' if au is None else unit_class(au)}_{j:02d}"
            path = out / f"H{k:03d}" / f"{base}_F3D.wrl"
            writers.write_vrml(path, frame.vertices, model.polygons, model.uv, model.polygon_uv, f"{base}_F3D.bmp")
            writers.write_image(path.with_suffix(".bmp"), texture)
            scans.append((path, au))
    return scans


def detection(scored: dict, classes: list[str], shown: list, units) -> dict[str, dict]:
    """Per AU: AUC of its class probability and F1 of the argmax decision."""
    top = np.array(classes)[scored["scores"].argmax(axis=1)]
    result = {}
    for au in units:
        positive = np.array([s == au for s in shown])
        probability = scored["probabilities"][:, classes.index(unit_class(au))]
        called = top == unit_class(au)
        tp, fp, fn = int((called & positive).sum()), int((called & ~positive).sum()), int((~called & positive).sum())
        result[unit_class(au)] = {"auc": auc(probability[positive], probability[~positive]),
                                  "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0}
    return result


class Scorer:
    """Renders the scans once per render setting and scores them with any model."""

    def __init__(self, scans: list[Path], workdir: Path):
        self.scans, self.workdir, self.renders = scans, workdir, {}

    def __call__(self, model_path, classes: list[str], prompts: Path, wise_alpha=None) -> dict[str, np.ndarray]:
        """Predictor.score of every scan: cosine ``scores`` and ``probabilities`` (N, K)."""
        from smile_vlm.predict import Predictor, find_samples

        predictor = Predictor(model_path, classes=classes, prompts=str(prompts), wise_alpha=wise_alpha)
        key = json.dumps(predictor.render_settings, sort_keys=True, default=str)
        if key not in self.renders:
            rendered = {}
            samples = find_samples(self.scans, False)
            for start in range(0, len(samples), 32):
                chunk = predictor.render(samples[start:start + 32], self.workdir / f"r{len(self.renders)}-{start}")
                rendered.update({start + p: views for p, (views, _, failed) in chunk.items()})
            missing = [str(self.scans[p]) for p in range(len(samples)) if rendered.get(p) is None]
            if missing:
                raise SystemExit(f"rendering failed for {missing[:3]}")
            self.renders[key] = np.stack([rendered[p] for p in range(len(samples))])
        return predictor.score(self.renders[key])


def fold_models(workdir: Path, variant: str) -> list[Path]:
    models = sorted((workdir / "results" / EXPERIMENT / "models" / variant).glob("fold*/model.pt"))
    if not models:
        raise SystemExit(f"--workdir {workdir}: no fold models of {variant} under results/{EXPERIMENT}/models")
    return models


def corpus_auc(model_path: Path, classes: list[str], prompts: Path, corpus: dict, units) -> float:
    """Mean AUC over AUs of the AU classes' probabilities on a corpus's static samples."""
    from smile_vlm.au_align import sample_units
    from smile_vlm.predict import Predictor

    static = [k for k, dynamic in enumerate(corpus["dynamic"]) if not dynamic]
    shown = [sample_units(corpus["units"][k]) for k in static]
    probabilities = Predictor(model_path, classes=classes, prompts=str(prompts)).score(
        np.asarray(corpus["images"])[static])["probabilities"]
    aucs = []
    for au in units:
        positive = np.array([au in sample for sample in shown])
        if 0 < positive.sum() < len(positive):
            column = probabilities[:, classes.index(unit_class(au))]
            aucs.append(auc(column[positive], column[~positive]))
    return statistics.mean(aucs)


def corpus_check(model_path: Path, classes: list[str], prompts: Path, identities: int, units) -> str:
    """A markdown row: mean AUC on the encoder's own training corpus and on a fresh one."""
    from smile_vlm import corpus, pretrain
    from smile_vlm.wise import read_vision

    state = read_vision(model_path)
    settings = pretrain.resolve({k: v for k, v in json.loads(state["settings"]).items()
                                 if k in ("pretrain", "render", "encoders")})
    own = corpus.cached_corpus(settings, model_path.parent / "corpus.npz")
    own = own if own is not None else corpus.build_corpus(settings)
    fresh = pretrain.resolve({**settings, "pretrain": {**settings["pretrain"], "identities": identities,
                                                       "seed": int(settings["pretrain"]["seed"]) + 1}})
    return (f"| {model_path.parent.name}/{model_path.name} | {settings['pretrain']['identities']} | "
            f"{corpus_auc(model_path, classes, prompts, own, units):.3f} | {identities} | "
            f"{corpus_auc(model_path, classes, prompts, corpus.build_corpus(fresh), units):.3f} |")


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, nargs="+",
                        help="a pretraining's vision.pt (several: each asked on the same scans)")
    parser.add_argument("--face-source", choices=("ict", "procedural"), default="ict",
                        help="face model of the held-out scans (the one the pretraining did not use, to test transfer)")
    parser.add_argument("--ict-dir", default=os.environ.get("SMILE_VLM_ICT_DIR"), help="ICT-FaceKit FaceXModel/ folder")
    parser.add_argument("--identities", type=int, default=8, help="held-out identities")
    parser.add_argument("--workdir", help="a BU-3DFE cell folder of bench_learning_curve.py --keep (fold models)")
    parser.add_argument("--variants", nargs="+", default=["smile_vlm_pretrained"], help="fold-model variants of --workdir")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0], help="WiSE-FT mixing weights of the fold models")
    parser.add_argument("--corpus-check", type=int, metavar="N", default=0,
                        help="also score each pretraining's own corpus and a fresh one of N identities")
    args = parser.parse_args()

    from smile_vlm.synth.expressions import ACTION_UNITS

    if args.face_source == "ict" and not (args.ict_dir and (Path(args.ict_dir) / "generic_neutral_mesh.obj").is_file()):
        parser.error("--face-source ict needs --ict-dir (or SMILE_VLM_ICT_DIR): an ICT-FaceKit FaceXModel/ folder")
    absent = [path for path in args.pretrained if not Path(path).is_file()]
    if absent:
        parser.error(f"--pretrained {absent[0]}: no such file")
    if any(not 0.0 <= a <= 1.0 for a in args.alphas):
        parser.error("--alphas: mixing weights from 0 to 1")
    pretrained = [Path(path).resolve() for path in args.pretrained]
    workdir = Path(args.workdir).resolve() if args.workdir else None
    units = list(ACTION_UNITS)
    rows, per_unit = [], {}
    with tempfile.TemporaryDirectory(prefix="au-detection-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        scans = held_out_scans(args.face_source, args.ict_dir, args.identities, units, tmp / "scans")
        classes = write_prompts(units, tmp / "prompts.yaml")
        written = time.perf_counter() - started
        score = Scorer([path for path, _ in scans], tmp / "renders")
        shown = [au for _, au in scans]
        models = [(f"pretrained encoder ({path.parent.name}/{path.name})", "-", [path]) for path in pretrained]
        if workdir is not None:
            os.chdir(workdir)  # fold models name their training store relative to the workflow folder
            models += [(variant, alpha, fold_models(workdir, variant)) for variant in args.variants
                       for alpha in (args.alphas if fine_tuned_from_pretraining(workdir, variant) else [1.0])]
        for name, alpha, paths in models:
            folds = [detection(score(path, classes, tmp / "prompts.yaml", None if alpha == "-" else alpha),
                               classes, shown, units) for path in paths]
            aucs = [statistics.mean(f[unit_class(au)]["auc"] for au in units) for f in folds]
            f1s = [statistics.mean(f[unit_class(au)]["f1"] for au in units) for f in folds]
            rows.append(f"| {name} | {alpha} | {len(paths)} | {mean_std(aucs)} | {mean_std(f1s)} | "
                        f"{sum(a >= 0.85 for a in (statistics.mean(f[unit_class(au)]['auc'] for f in folds) for au in units))} "
                        f"of {len(units)} |")
            per_unit[f"{name}, alpha {alpha}"] = {au: (statistics.mean(f[unit_class(au)]["auc"] for f in folds),
                                                       statistics.mean(f[unit_class(au)]["f1"] for f in folds))
                                                  for au in units}
        checks = [corpus_check(path, classes, tmp / "prompts.yaml", args.corpus_check, units)
                  for path in pretrained] if args.corpus_check else []
        seconds = time.perf_counter() - started

    print(f"{args.identities} held-out {args.face_source} identities x ({len(units)} single-AU + {NEUTRAL_SCANS} neutral) "
          f"= {len(scans)} scans (written in {written:.0f} s; everything {seconds:.0f} s); {len(units) + 1} prompt classes; "
          f"pretraining {' '.join(map(str, pretrained))}\n")
    print("| model | WiSE-FT alpha | models (folds) | mean AUC over AUs (± over folds) | mean F1 over AUs | AUs with AUC ≥ 0.85 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if checks:
        print("\nThe static samples of corpora made by each pretraining's settings (mean AUC over AUs):\n")
        print("| pretraining | identities trained on | its own corpus | fresh identities | a fresh corpus |")
        print("|---|---|---|---|---|")
        print("\n".join(checks))
    names = list(per_unit)
    print("\nAUC / F1 per action unit:\n")
    print("| AU | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for au in units:
        print(f"| {unit_class(au)} | " + " | ".join(f"{per_unit[n][au][0]:.2f} / {per_unit[n][au][1]:.2f}" for n in names) + " |")
    print("\n" + json.dumps({n: {unit_class(au): v for au, v in per_unit[n].items()} for n in names}))


if __name__ == "__main__":
    main()
