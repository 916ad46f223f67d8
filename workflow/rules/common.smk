# Shared helpers: wildcard constraints, settings passed to rules through params:, and the input
# functions that read checkpoint outputs (subjects from a manifest, folds from folds.csv).
import json
import re
import shlex
import sys
from pathlib import Path

import pandas as pd

from smile_vlm.readers.names import CLASSES
from smile_vlm.settings import resolve_variant

# Rules call the library through the CLI of the Python that runs Snakemake, so a venv works
# without activation; `cli:` in the config overrides it (e.g. `smile-vlm` inside conda envs).
SMILE_VLM = config.get("cli") or f"{shlex.quote(sys.executable)} -m smile_vlm"
DATASETS = list(config["datasets"])
EXPERIMENTS = list(config["experiments"])


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    experiment=_alternatives(EXPERIMENTS),
    variant=r"[A-Za-z0-9_]+",
    subject=r"[^/]+",
    k=r"\d+",


def as_json(obj):
    """Settings travel to the CLI as canonical JSON, so params: changes are detected exactly."""
    return json.dumps(obj, sort_keys=True)


# ---- datasets -------------------------------------------------------------------------------
def dataset_root(dataset):
    return config["datasets"][dataset]["root"]


def synthetic_root(dataset):
    return f"{config['synthetic']['root']}/{dataset}"


def raw_input(dataset):
    """The synthetic generator is a dependency only while the dataset points at its output."""
    if Path(dataset_root(dataset)) == Path(synthetic_root(dataset)):
        return [f"{synthetic_root(dataset)}/SYNTHETIC.json"]
    return []


def synth_settings(dataset):
    return {k: v for k, v in config["synthetic"].items() if k != "root"}


def index_settings(dataset):
    settings = dict(config["index"])
    settings.update({k: v for k, v in config["datasets"][dataset].items() if k != "root"})
    return settings


def dataset_classes(dataset):
    """The dataset's classes; a user's BP4D task map may add classes of its own."""
    classes = list(CLASSES[dataset])
    for name in config["datasets"][dataset].get("task_classes", {}).values():
        if name not in classes:
            classes.append(name)
    return classes


def views():
    render = config["render"]
    return [{"yaw": yaw, "pitch": pitch} for pitch in render["pitches"] for yaw in render["yaws"]]


def pack_settings(dataset):
    return {
        "classes": dataset_classes(dataset),
        "multi_label": dataset == "4dme",
        "views": views(),
        "render": config["render"],
        **config["store"],
    }


def subjects(dataset):
    manifest = checkpoints.index.get(dataset=dataset).output.manifest
    table = pd.read_csv(manifest, usecols=["subject"], dtype=str, keep_default_na=False)
    return sorted(table["subject"].unique())


def shard_indexes(wildcards):
    return expand(
        "results/{dataset}/views/{subject}/index.csv",
        dataset=wildcards.dataset,
        subject=subjects(wildcards.dataset),
    )


# ---- experiments ----------------------------------------------------------------------------
def experiment(name):
    return config["experiments"][name]


def experiment_store(wildcards):
    return f"results/{experiment(wildcards.experiment)['dataset']}/store.zarr"


def train_store(wildcards):
    """Cross-dataset experiments train on another dataset's store (e.g. BU-4DFE -> BP4D)."""
    exp = experiment(wildcards.experiment)
    return f"results/{exp.get('train_dataset', exp['dataset'])}/store.zarr"


def protocol_settings(name):
    exp = experiment(name)
    return {"classes": exp["classes"], **exp["protocol"]}


def variant_settings(name):
    return resolve_variant(config["variants"], name)


def train_settings(wildcards):
    exp = experiment(wildcards.experiment)
    return {
        "train": config["train"],
        "encoders": config["encoders"],
        "prompts": config["prompts"],
        "classes": exp["classes"],
        "protocol": exp["protocol"],
    }


TEXT_BANK = "results/text_bank.pt"


def text_bank_settings():
    return {"encoders": {"text": config["encoders"]["text"]}, "prompts": {"name": config["prompts"]["name"]}}


def prompt_file_input(wildcards):
    """The prompt YAML, so that editing it re-embeds the prompts (and reruns what used them)."""
    from smile_vlm.prompts import prompt_file

    path = prompt_file(config["prompts"]["name"])
    return [str(path)] if path.is_file() else []


def fold_ids(experiment_name):
    folds_csv = checkpoints.folds.get(experiment=experiment_name).output[0]
    return sorted(pd.read_csv(folds_csv, usecols=["k"])["k"].unique().tolist())


def eval_jsons_of(experiment_name, variants, first_folds="all"):
    folds = fold_ids(experiment_name)
    if first_folds != "all":
        folds = folds[: int(first_folds)]
    return expand(
        "results/{experiment}/eval/{variant}/fold{k}.json",
        experiment=experiment_name,
        variant=variants,
        k=folds,
    )


def eval_jsons(wildcards):
    return eval_jsons_of(wildcards.experiment, experiment(wildcards.experiment)["variants"])


def ablation_evals(wildcards):
    """Every ablation variant, the full model included, on the same folds."""
    ablation = config["ablation"]
    return eval_jsons_of(wildcards.experiment, ablation["variants"], ablation["folds"])


def train_logs(wildcards):
    return expand(
        "results/{experiment}/models/{variant}/fold{k}/model.pt",
        experiment=wildcards.experiment,
        variant=wildcards.variant,
        k=fold_ids(wildcards.experiment),
    )


def table_settings(name):
    return {"name": name, "prompts_source": config["prompts"]["source"], **experiment(name)}


def data_sources():
    """Per table: synthetic or the real root, so the summary says what its numbers are."""
    sources = {}
    for name in EXPERIMENTS:
        dataset = experiment(name)["dataset"]
        synthetic = bool(raw_input(dataset))
        sources[name] = "synthetic default" if synthetic else f"real data at {dataset_root(dataset)}"
    return sources


# ---- targets --------------------------------------------------------------------------------
def experiment_figures(name):
    exp = experiment(name)
    figures = [f"results/{name}/figures/view_weights.png"]
    if exp["dataset"] != "4dme":  # multi-label: no confusion matrix
        figures.append(f"results/{name}/figures/confusion.png")
    figures += [f"results/{name}/figures/training_curves_{v}.png" for v in exp["variants"]]
    return figures


def all_targets():
    targets = [f"results/tables/{name}.csv" for name in EXPERIMENTS]
    targets += ["results/tables/summary.md", "results/tables/ablation.csv",
                "results/figures/gains_heatmap.png"]
    targets += [f"results/figures/ablation_{name}.png" for name in config["ablation"]["experiments"]]
    for name in EXPERIMENTS:
        targets += experiment_figures(name)
    datasets = sorted({experiment(n)["dataset"] for n in EXPERIMENTS})
    targets += [f"results/{d}/figures/contact_sheet.png" for d in datasets]
    return targets
