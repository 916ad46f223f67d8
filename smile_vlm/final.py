"""The deployable model of an experiment: every subject of its protocol trains, no test fold.

A fold model is a measurement: it exists to be scored on subjects it never saw. To use SMILE-VLM
on new scans one wants the model the table's numbers vouch for, trained on all the data the
protocol allows. ``train_final`` trains it with exactly the fold recipe (``train.train_fold``,
same variant and settings) on the union of the train and test subjects of the protocol's first
repetition (for a cross-dataset protocol: every training-store subject, as its single fold
already does). Its accuracy cannot be measured on those subjects; the cross-validated accuracy
of the same recipe, from the experiment's table, is the estimate the model card quotes.

``model.pt`` holds what the fold model holds plus a ``deploy`` section, so that ``predict``
needs nothing but this file (and, for a CLIP vision tower, the CLIP checkpoint it was
initialised from, which rebuilds the architecture before the trained weights are loaded):

- ``render``, ``settings_hash``, ``kind``, ``dataset``: the training store's render settings
  (canonicalisation, views, image size, frames, pooling) and what they made;
- ``class_embeddings`` (K, D) and ``prompts``: the prompt-ensembled text embeddings of the
  trained classes, so predicting those classes needs no text tower;
- ``multilabel_rule``: how a multi-label model's scores become label sets;
- ``train_subjects``, ``samples_per_class``: what the model has seen (for the model card).

Usage: ``smile-vlm final-model --store ... --folds ... --variant ... --settings ... --out DIR``
(``python -m torch.distributed.run ... -m smile_vlm final-model ...`` on several GPUs).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.folds import fold_samples, read_folds
from smile_vlm.settings import complete

DEPLOY_FORMAT = 1
RUN_DIR = "run"  # train_fold's checkpoint, log and plain model.pt live here; resumable


def final_split(store_path, folds_csv, protocol: dict | None) -> dict:
    """``fold_samples`` of the first fold with every subject of the first repetition training.

    Within one dataset the train and test splits of a fold share one sample filter, so their union
    is every usable sample of the drawn subjects. In a cross fold the training store yields no test
    split, so this is its training split unchanged.
    """
    folds = read_folds(folds_csv)
    first = folds[folds["repeat"] == folds["repeat"].min()]
    repeat, fold = int(first["repeat"].iloc[0]), int(first["fold"].min())
    split = fold_samples(store_path, folds_csv, repeat, fold, protocol)
    return {**split, "train": np.union1d(split["train"], split["test"]).astype(np.int64),
            "test": np.zeros(0, dtype=np.int64),
            "train_subjects": sorted(set(split["train_subjects"]) | set(split["test_subjects"])),
            "test_subjects": []}


def train_final(store_path, folds_csv, variant: dict, settings: dict | None, out_dir, *,
                text_bank_file=None) -> Path:
    """Train the deployable model into ``out_dir/run`` and write ``out_dir/model.pt`` (rank 0)."""
    from smile_vlm.settings import resolve_settings
    from smile_vlm.train import train_fold

    resolved = resolve_settings(settings)
    split = final_split(store_path, folds_csv, resolved["protocol"])
    out_dir = Path(out_dir)
    trained = train_fold(store_path, folds_csv, 0, -1, variant, settings, out_dir / RUN_DIR,
                         text_bank_file=text_bank_file, split=split)
    final_path = out_dir / "model.pt"
    if int(os.environ.get("RANK", "0")) == 0:
        write_deployable(trained, final_path, store_path, split, resolved, text_bank_file)
    return final_path


def write_deployable(trained_pt, out_pt, store_path, split: dict, settings: dict, text_bank_file=None) -> None:
    """``trained_pt`` (train_fold's model.pt) plus the ``deploy`` section, written atomically."""
    from smile_vlm.store import open_store, store_table
    from smile_vlm.prompts import build_text_bank

    from smile_vlm.wise import baked

    state = baked(torch.load(trained_pt, map_location="cpu", weights_only=True))  # WiSE-FT weights mixed in
    attrs = open_store(store_path).attrs.asdict()
    classes = list(state["classes"])
    bank = build_text_bank(settings, classes, text_bank_file)
    table = store_table(store_path).loc[split["train"]]
    counts = _samples_per_class(table, classes, bool(attrs["multi_label"]))
    options = settings["evaluate"]  # complete: settings.resolve_settings
    state["fold"] = None
    state["deploy"] = {
        "format": DEPLOY_FORMAT,
        "dataset": str(attrs["dataset"]),
        "kind": str(attrs.get("kind", "")),
        "render": json.loads(json.dumps(attrs["render"])),
        "settings_hash": str(attrs["settings_hash"]),
        "image_size": int(open_store(store_path)["images"].shape[2]),
        "class_embeddings": bank.class_embeddings().cpu(),
        "prompts": bank.prompts(),
        "multilabel_rule": options["multilabel_rule"],
        "train_subjects": list(split["train_subjects"]),
        "samples_per_class": counts,
        "data_source": data_source(table["source"]),
    }
    with atomic.atomic_path(out_pt) as tmp:
        torch.save(state, tmp)


def data_source(sources) -> str:
    """Where the training scans came from: the synthetic generator (its SYNTHETIC.json lies above
    them) or a raw dataset folder, so the card can say which."""
    paths = [Path(path) for joined in sources for path in str(joined).split("|") if path]
    if not paths:
        return "unknown"
    root = Path(os.path.commonpath([str(path.parent) for path in paths]))
    for folder in (root, *root.parents):
        if (folder / "SYNTHETIC.json").is_file():
            return f"synthetic faces written by smile-vlm synth ({folder})"
    return f"raw scans under {root}"


def _samples_per_class(table: pd.DataFrame, classes: list[str], multi_label: bool) -> dict[str, int]:
    if multi_label:
        names = [set(filter(None, value.split("|"))) for value in table["labels"]]
    else:
        names = [{value} for value in table["label"]]
    return {name: int(sum(name in row for row in names)) for name in classes}


# --------------------------------------------------------------------------- model card

def cross_validated(table_csv, variant: str) -> dict[str, float]:
    """The mean row (and its standard deviations) of ``variant`` in an experiment's table."""
    table = pd.read_csv(table_csv)
    rows = table[(table["source"] == "ours") & (table["method"] == variant) & (table["fold"].astype(str) == "mean")]
    if rows.empty:
        raise ScanError(table_csv, f"no mean row of {variant!r} (is the variant in this experiment?)")
    row = rows.iloc[0]
    folds = int(((table["source"] == "ours") & (table["method"] == variant) & (table["fold"].astype(str) != "mean")).sum())
    numbers = {key: float(value) for key, value in row.items()
               if key not in ("source", "method", "fold", "setting", "prompts") and _is_number(value)}
    return {"n_folds": folds, **numbers}


def _metric_line(name: str, value: float, std: float | None) -> str:
    spread = f" ± {std:.3g}" if std is not None else ""
    return f"- {name}: {value:.4g}{spread}"


def _is_number(value) -> bool:
    try:
        return not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def model_card(model_pt, table_csv, experiment: str) -> str:
    """Markdown describing the deployable model, written only from the checkpoint and the table."""
    state = torch.load(model_pt, map_location="cpu", weights_only=True)
    deploy = state.get("deploy")
    if deploy is None:
        raise ScanError(model_pt, "not a deployable model (no deploy section): build it with `smile-vlm final-model`")
    settings, variant = state["settings"], state["variant"]
    scores = cross_validated(table_csv, variant.get("name", "smile_vlm"))
    render = complete("render", deploy["render"])  # a store of an older render section: its defaults
    counts = deploy["samples_per_class"]
    encoders = settings.get("encoders") or {}
    lines = [
        f"# Model card: {variant.get('name')} on {experiment}",
        "",
        f"`{Path(model_pt).name}`: {variant.get('name')} trained on every subject of the `{experiment}` protocol "
        "with the recipe of its cross-validation folds (no subject held out).",
        "",
        "## Training data",
        "",
        f"- dataset: {deploy['dataset']} ({deploy['kind'] or 'renders'}), store settings hash `{deploy['settings_hash'][:16]}`",
        f"- data: {deploy.get('data_source', 'unknown')}",
        f"- subjects: {len(deploy['train_subjects'])} ({', '.join(deploy['train_subjects'][:12])}"
        f"{', ...' if len(deploy['train_subjects']) > 12 else ''})",
        f"- samples: {int(state.get('n_train', sum(counts.values())))}; per class: "
        + ", ".join(f"{name} {count}" for name, count in counts.items()),
        f"- protocol: `{json.dumps(settings.get('protocol', {}), sort_keys=True)}`",
        "",
        "## Input the model expects",
        "",
        "- views (yaw, pitch in degrees): " + ", ".join(f"({view['yaw']:g}, {view['pitch']:g})" for view in state["views"]),
        f"- rendering: mode {render.get('mode')}, {deploy['image_size']} px, crop radius {render.get('radius_mm')} mm "
        f"around the nose tip, units {render['units']}",
        f"- 4D sequences: {render.get('frames')} frames sampled uniformly, {render.get('pooling')} rank pooling "
        "into one dynamic image per view" if deploy["kind"] == "dynamic image" else
        "- static scans: one render per view",
        "",
        "`smile-vlm predict` reads these settings from the checkpoint; a scan is prepared exactly as the "
        "training store was.",
        "",
        "## Recipe",
        "",
        f"- variant: `{json.dumps(variant, sort_keys=True)}`",
        f"- encoders: text `{json.dumps(encoders.get('text'), sort_keys=True)}` (frozen), "
        f"vision `{json.dumps(encoders.get('vision'), sort_keys=True)}` (trained)",
        f"- training: {settings['train']['epochs']} epochs, batch {settings['train']['batch_size']}, "
        f"lr {settings['train']['lr']:g}, weight decay {settings['train']['weight_decay']:g}, seed {settings['train']['seed']}",
        f"- prompts: `{settings['prompts']['name']}` (source: {settings['prompts']['source']}); classes: "
        + ", ".join(state["classes"]),
        "",
        "## Cross-validated performance of this recipe",
        "",
        f"Mean over {scores['n_folds']} subject-independent fold{'s' if scores['n_folds'] != 1 else ''} of "
        f"`{experiment}` (models trained without the tested subjects; this model itself has no held-out score; "
        "accuracies in %, F1 in [0, 1], ± the standard deviation over folds):",
        "",
    ]
    lines += [_metric_line(key, value, scores.get(f"{key}_std")) for key, value in scores.items()
              if key != "n_folds" and not key.endswith("_std") and key != "n_test"]
    lines += [
        "",
        "## Not validated for",
        "",
        f"- data other than {deploy['dataset']}: other scanners, resolutions, populations, or synthetic vs real "
        "faces (a model trained on the synthetic default has never seen a real scan);",
        "- scans that are not frontal faces in millimetres facing +z (the readers' convention), or whose nose tip "
        "is not the most forward central point when no landmark file is given;",
        "- classes other than the trained ones: `--classes` gives zero-shot scores whose accuracy nobody measured;",
        "- clinical, forensic or any decision about a person: expression labels here are posed-expression "
        "categories of research datasets, not a person's emotional state.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(model_pt, table_csv, experiment: str, out_md) -> None:
    atomic.write_text(out_md, model_card(model_pt, table_csv, experiment))
