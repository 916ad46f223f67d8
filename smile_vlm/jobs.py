"""What each workflow job is given: pure functions of the validated config (plain data, no torch).

The Snakemake rules (workflow/rules/*.smk) pass these through ``params:``, so a job reruns
exactly when what it computes from changes, and the decisions behind them (which variant starts
from which pretrained file, which keys are speed only, which render settings a pretraining
depends on) are made here, once, where a test can call them. Every path a job is given is the
config's own (relative to the working directory where the config makes it so): no path of the
checkout or of the installed package, so a project folder can move without rerunning anything.
"""

from __future__ import annotations

import hashlib
import shlex

from smile_vlm import configcheck
from smile_vlm.readers.names import SEQUENCE_DATASETS
from smile_vlm.settings import (
    PRETRAIN_NOT_RUN,
    PRETRAIN_RENDER_KEYS,
    PROMPT_DIR,
    prompt_file,
    resolve_variant,
    variant_vision,
)
from smile_vlm.views import render_views

# Values that change how fast a job runs, never what it writes. They reach the job through
# threads:/resources: and a CLI option, never through params:, so changing them reruns nothing.
SPEED_ONLY = {"index": ("workers",), "render": ("threads",), "train": ("threads", "workers")}


def result_settings(config: dict, section: str) -> dict:
    """A config section without its speed-only keys: what params: may carry."""
    return {k: v for k, v in config[section].items() if k not in SPEED_ONLY.get(section, ())}


# ---- preprocessing ------------------------------------------------------------------------
def synthetic_root(config: dict, dataset: str) -> str:
    return f"{config['synthetic']['root']}/{dataset}"


def synth_settings(config: dict) -> dict:
    return {k: v for k, v in config["synthetic"].items() if k != "root"}


def index_settings(config: dict, dataset: str) -> dict:
    settings = result_settings(config, "index")
    settings.update({k: v for k, v in config["datasets"][dataset].items() if k != "root"})
    if settings["validate"] == "sampled" and dataset in SEQUENCE_DATASETS:
        # the frames rendering reads are the ones the index parses: a change of render.frames
        # reruns the index of the 4D datasets, and only theirs
        settings["frames"] = config["render"]["frames"]
    return settings


def pack_settings(config: dict, dataset: str) -> dict:
    return {
        "classes": configcheck.dataset_classes(config, dataset),
        "multi_label": dataset == "4dme",
        "views": render_views(config["render"]),
        "render": result_settings(config, "render"),
        **config["store"],
    }


# ---- experiments --------------------------------------------------------------------------
def protocol_settings(config: dict, experiment: str) -> dict:
    exp = config["experiments"][experiment]
    return {"classes": exp["classes"], **exp["protocol"]}


def variant_settings(config: dict, variant: str) -> dict:
    return resolve_variant(config["variants"], variant)


def encoder_settings(config: dict) -> dict:
    """The encoders section without a null vision init: jobs that start from scratch keep the
    params they had before init existed (and a variant's own vision.init is not overridden)."""
    vision = {k: v for k, v in config["encoders"]["vision"].items() if not (k == "init" and v is None)}
    return {**config["encoders"], "vision": vision}


def vision_init(config: dict, variant: str) -> str | None:
    """The pretrained vision.pt a variant's folds start from, or None: the vision spec the model
    is built with (``settings.variant_vision``, as ``models.model_variant`` merges it)."""
    return variant_vision(variant_settings(config, variant), encoder_settings(config)).get("init")


def train_settings(config: dict, experiment: str) -> dict:
    exp = config["experiments"][experiment]
    return {
        "experiment": experiment,  # recorded in model.pt; evaluation refuses another's
        "train": result_settings(config, "train"),
        "encoders": encoder_settings(config),
        "prompts": config["prompts"],
        "classes": exp["classes"],
        "protocol": exp["protocol"],
    }


def evaluate_settings(config: dict, experiment: str) -> dict:
    """The training job's settings and the evaluate section (evaluation and the final model)."""
    return {**train_settings(config, experiment), "evaluate": config["evaluate"]}


def text_bank_settings(config: dict) -> dict:
    return {"encoders": {"text": config["encoders"]["text"]}, "prompts": {"name": config["prompts"]["name"]}}


def prompt_inputs(config: dict) -> list[str]:
    """The user's own prompt YAML as an input file (a path as the config gives it), so that editing
    it re-embeds the prompts; a set shipped in the package is followed by ``prompt_digest``."""
    name = config["prompts"]["name"]
    path = prompt_file(name)
    if path.parent == PROMPT_DIR or not path.is_file():
        return []
    return [str(name)]


def prompt_digest(config: dict) -> str | None:
    """The content hash of a prompt set shipped in the package (None for the user's own file, an
    input): a param, so editing the package's YAML re-embeds, and moving the package does not."""
    path = prompt_file(config["prompts"]["name"])
    if path.parent != PROMPT_DIR or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table_settings(config: dict, experiment: str) -> dict:
    return {"name": experiment, "prompts_source": config["prompts"]["source"], **config["experiments"][experiment]}


def ablation_table_settings(config: dict, experiment: str) -> dict:
    return {**table_settings(config, experiment), "variants": config["ablation"]["variants"]}


def data_sources(config: dict) -> dict[str, str]:
    """Per table: synthetic or the real root, so the summary says what its numbers are."""
    sources = {}
    for name, exp in config["experiments"].items():
        dataset = exp["dataset"]
        synthetic = configcheck.is_synthetic(config, dataset)
        sources[name] = "synthetic default" if synthetic else f"real data at {config['datasets'][dataset]['root']}"
    return sources


# ---- targets ------------------------------------------------------------------------------
def experiment_figures(config: dict, experiment: str) -> list[str]:
    exp = config["experiments"][experiment]
    figures = [f"results/{experiment}/figures/view_weights.png"]
    if exp["dataset"] != "4dme":  # multi-label: no confusion matrix
        figures.append(f"results/{experiment}/figures/confusion.png")
    figures += [f"results/{experiment}/figures/training_curves_{v}.png" for v in exp["variants"]]
    return figures


def all_targets(config: dict) -> list[str]:
    experiments = list(config["experiments"])
    targets = [f"results/tables/{name}.csv" for name in experiments]
    targets += ["results/tables/summary.md", "results/tables/ablation.csv", "results/figures/gains_heatmap.png"]
    targets += [f"results/figures/ablation_{name}.png" for name in config["ablation"]["experiments"]]
    for name in experiments:
        targets += experiment_figures(config, name)
    datasets = sorted({config["experiments"][n]["dataset"] for n in experiments})
    targets += [f"results/{d}/figures/contact_sheet.png" for d in datasets]
    return targets


# ---- pretraining --------------------------------------------------------------------------
def pretrain_names(config: dict) -> list[str]:
    return ["default", *config["pretrain"]["variants"]]


def pretrain_settings(config: dict, name: str) -> dict:
    """What the pretrained weights depend on: the pretrain section (with the named variant's
    overrides), the render settings its corpus is drawn with, the text tower that embeds the
    captions and the vision architecture. No train/evaluate/experiment setting, so changing those
    never reruns it."""
    section = config["pretrain"]
    pretrain = {k: v for k, v in section.items() if k not in PRETRAIN_NOT_RUN}
    pretrain.update(section["variants"].get(name) or {})
    render = {k: config["render"][k] for k in PRETRAIN_RENDER_KEYS}
    vision = {k: v for k, v in config["encoders"]["vision"].items() if k != "init"}
    return {"pretrain": pretrain, "render": render, "encoders": {"text": config["encoders"]["text"], "vision": vision}}


# ---- predict ------------------------------------------------------------------------------
def predict_options(config: dict) -> str:
    """What changes a prediction besides the model: the class names, the prompts, what a folder is."""
    settings = config["predict"]
    options = [f"--kind {settings['kind']}"]
    if settings.get("classes"):
        options.append(f"--classes {shlex.quote(','.join(settings['classes']))}")
    if settings.get("prompts"):
        options.append(f"--prompts {shlex.quote(str(settings['prompts']))}")
    if settings.get("units"):
        options.append(f"--units {settings['units']}")
    return " ".join(options)
