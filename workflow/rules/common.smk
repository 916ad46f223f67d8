# Shared helpers: config checks, wildcard constraints, settings passed to rules through params:,
# and the input functions that read checkpoint outputs (subjects from a manifest, folds from
# folds.csv). Nothing here imports torch, which alone takes seconds to load (tests/test_configcheck.py).
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import yaml
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from smile_vlm import configcheck
from smile_vlm.readers.names import SEQUENCE_DATASETS
from smile_vlm.settings import resolve_variant
from smile_vlm.views import render_views

# Rules call the library through the CLI of the Python that runs Snakemake, so a venv works
# without activation. Under --sdm conda a rule's python is its environment's, which holds the
# dependencies but not this package: PYTHONPATH points it at the workflow's copy. `cli:` in the
# config overrides both.
#
# `snakemake --lint` flags every shell command that uses SMILE_VLM without params:. That is on
# purpose: the interpreter's path changes no result, and as a param, moving the venv would rerun
# every job.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    PYTHON = f"PYTHONPATH={shlex.quote(workflow.basedir)} python"
else:
    PYTHON = shlex.quote(sys.executable)
SMILE_VLM = config.get("cli") or f"{PYTHON} -m smile_vlm"
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


# ---- config checks --------------------------------------------------------------------------
def stop(problems):
    """One line per problem on stderr, then exit before any job runs."""
    configcheck.refuse(problems)


def check_config():
    """Cross-references the schema cannot see (smile_vlm.configcheck); the Snakefile calls it
    right after validation, before any rule reads the config."""
    schema = yaml.safe_load(Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text())
    vision_keys = schema["properties"]["encoders"]["properties"]["vision"]["properties"]
    stop(configcheck.config_problems(config, vision_keys=list(vision_keys)))


_roots_checked = False


def check_roots():
    """Raw data of the datasets the requested targets need. Called from the index checkpoint's
    input function, the first moment Snakemake knows the targets (still before any job runs);
    jobs re-reading the Snakefile on a cluster node skip it."""
    global _roots_checked
    if _roots_checked or not workflow.is_main_process:
        return
    _roots_checked = True
    dag_settings = workflow.dag_settings
    targets = sorted(dag_settings.targets) if dag_settings is not None else []
    needed = configcheck.datasets_for_targets(config, targets, os.getcwd())
    stop(configcheck.root_problems(config, needed))


# ---- speed-only settings ----------------------------------------------------------------------
# Values that change how fast a job runs, never what it writes. They reach the job through
# threads:/resources: and a CLI option, never through params:, so changing them reruns nothing.
SPEED_ONLY = {"index": ("workers",), "render": ("threads",), "train": ("threads", "workers")}


def result_settings(section):
    """A config section without its speed-only keys: what params: may carry."""
    return {k: v for k, v in config[section].items() if k not in SPEED_ONLY.get(section, ())}


# ---- datasets -------------------------------------------------------------------------------
def dataset_root(dataset):
    return config["datasets"][dataset]["root"]


def synthetic_root(dataset):
    return f"{config['synthetic']['root']}/{dataset}"


def raw_input(dataset):
    """The synthetic generator is a dependency only while the dataset points at its output."""
    if configcheck.is_synthetic(config, dataset):
        return [f"{synthetic_root(dataset)}/SYNTHETIC.json"]
    return []


def index_input(wildcards):
    check_roots()
    return raw_input(wildcards.dataset)


def synth_settings(dataset):
    return {k: v for k, v in config["synthetic"].items() if k != "root"}


def index_settings(dataset):
    settings = result_settings("index")
    settings.update({k: v for k, v in config["datasets"][dataset].items() if k != "root"})
    if settings["validate"] == "sampled" and dataset in SEQUENCE_DATASETS:
        # the frames rendering reads are the ones the index parses: a change of render.frames
        # reruns the index of the 4D datasets, and only theirs
        settings["frames"] = config["render"]["frames"]
    return settings


def all_cores(wildcards=None):
    """Every core of the run (a cluster run has no core count: 1, unless the profile's
    set-threads gives more). Speed only, so never a param."""
    return workflow.resource_settings.cores or 1


def index_threads(wildcards):
    """index.workers, else every core of the run."""
    workers = config["index"]["workers"]
    return workers if workers is not None else all_cores()


def dataset_classes(dataset):
    """The dataset's classes; a user's BP4D task map may add classes of its own."""
    return configcheck.dataset_classes(config, dataset)


def pack_settings(dataset):
    return {
        "classes": dataset_classes(dataset),
        "multi_label": dataset == "4dme",
        "views": render_views(config["render"]),
        "render": result_settings("render"),
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
def torch_launcher(command):
    """Several GPUs train with DDP under torchrun; otherwise a single process.

    The GPU count is the rule's `gpu` resource, so a profile's set-resources decides both what
    the scheduler grants and how many processes torchrun starts. Both run `smile-vlm <command>`,
    so both accept the same options.
    """

    def launcher(wildcards, resources):
        gpus = int(resources.get("gpu", 0))
        if gpus > 1:
            return f"{PYTHON} -m torch.distributed.run --standalone --nproc-per-node {gpus} -m smile_vlm {command}"
        return f"{SMILE_VLM} {command}"

    return launcher


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


def encoder_settings():
    """The encoders section without a null vision init: jobs that start from scratch keep the
    params they had before init existed (and a variant's own vision.init is not overridden)."""
    vision = {k: v for k, v in config["encoders"]["vision"].items() if not (k == "init" and v is None)}
    return {**config["encoders"], "vision": vision}


def vision_init(variant):
    """The pretrained vision.pt a variant's folds start from, or None: the variant's own
    vision.init when it sets one (null = from scratch), else encoders.vision.init
    (models.model_variant merges them the same way)."""
    own = variant_settings(variant).get("vision") or {}
    return own["init"] if "init" in own else config["encoders"]["vision"].get("init")


def vision_init_input(wildcards):
    """The pretrained vision.pt as an input file: Snakemake builds it first (rule pretrain makes
    results/pretrain/<name>/vision.pt) and retrains the folds whenever it is rebuilt. Its path
    also reaches the job through params: (the settings), so pointing init elsewhere reruns too."""
    init = vision_init(wildcards.variant)
    return [init] if init else []


def train_settings(wildcards):
    exp = experiment(wildcards.experiment)
    return {
        "experiment": wildcards.experiment,  # recorded in model.pt; evaluation refuses another's
        "train": result_settings("train"),
        "encoders": encoder_settings(),
        "prompts": config["prompts"],
        "classes": exp["classes"],
        "protocol": exp["protocol"],
    }


TEXT_BANK = "results/text_bank.pt"


def text_bank_settings():
    return {"encoders": {"text": config["encoders"]["text"]}, "prompts": {"name": config["prompts"]["name"]}}


def prompt_file_input(wildcards):
    """The prompt YAML, so that editing it re-embeds the prompts (and reruns what used them)."""
    path = configcheck.prompt_path(config["prompts"]["name"])
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


# ---- pretrain --------------------------------------------------------------------------------
def pretrain_names():
    return ["default", *config["pretrain"]["variants"]]


def pretrain_settings(name):
    """What the pretrained weights depend on: the pretrain section (with the named variant's
    overrides), the views and render mode, the text tower that embeds the captions and the vision
    architecture. No train/evaluate/experiment setting, so changing those never reruns it."""
    section = config["pretrain"]
    pretrain = {k: v for k, v in section.items() if k not in ("threads", "variants")}
    pretrain.update(section["variants"].get(name) or {})
    render = {k: config["render"][k] for k in ("yaws", "pitches", "mode", "radius_mm", "backend")}
    vision = {k: v for k, v in config["encoders"]["vision"].items() if k != "init"}
    return {"pretrain": pretrain, "render": render, "encoders": {"text": config["encoders"]["text"], "vision": vision}}


# ---- predict ---------------------------------------------------------------------------------
def predict_setting(key):
    """predict.model / predict.inputs, or one line saying what to set (only when a target needs it)."""
    value = (config.get("predict") or {}).get(key)
    if not value:
        stop([f"predict.{key} is not set: give `predict: {{model: <model.pt>, inputs: <folder>}}` "
              "in the config (or --config predict='{...}')"])
    return value


def predict_subjects():
    """The subfolders of predict.inputs that hold scans: one predict job each."""
    from smile_vlm.predict import subject_folders

    root = Path(predict_setting("inputs"))
    if not root.is_dir():
        stop([f"predict.inputs: {root} is not a folder"])
    subjects = subject_folders(root)
    if not subjects:
        stop([f"predict.inputs: no subfolder of {root} holds scans (one folder per subject is expected)"])
    return subjects


def predict_options(wildcards):
    """What changes a prediction besides the model: the class names, the prompts, what a folder is."""
    settings = config.get("predict") or {}
    options = [f"--kind {settings.get('kind', 'auto')}"]
    if settings.get("classes"):
        options.append(f"--classes {shlex.quote(','.join(settings['classes']))}")
    if settings.get("prompts"):
        options.append(f"--prompts {shlex.quote(str(settings['prompts']))}")
    if settings.get("units"):
        options.append(f"--units {settings['units']}")
    return " ".join(options)
