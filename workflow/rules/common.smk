# Wiring: config checks, wildcard constraints, and the input functions that read checkpoint
# outputs (subjects from a manifest, folds from folds.csv). What each job is given (params:) is
# decided by smile_vlm.jobs, which the rules call with the config. Nothing here imports torch,
# which alone takes seconds to load (tests/test_configcheck.py).
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from smile_vlm import configcheck, jobs

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
    stop(configcheck.config_problems(config))


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


# ---- datasets -------------------------------------------------------------------------------
def index_input(wildcards):
    """The synthetic generator is a dependency only while the dataset points at its output."""
    check_roots()
    if configcheck.is_synthetic(config, wildcards.dataset):
        return [f"{jobs.synthetic_root(config, wildcards.dataset)}/SYNTHETIC.json"]
    return []


def all_cores(wildcards=None):
    """Every core of the run (a cluster run has no core count: 1, unless the profile's
    set-threads gives more). Speed only, so never a param."""
    return workflow.resource_settings.cores or 1


def index_threads(wildcards):
    """index.workers, else every core of the run."""
    workers = config["index"]["workers"]
    return workers if workers is not None else all_cores()


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


def experiment_store(wildcards):
    return f"results/{config['experiments'][wildcards.experiment]['dataset']}/store.zarr"


def train_store(wildcards):
    """Cross-dataset experiments train on another dataset's store (e.g. BU-4DFE -> BP4D)."""
    exp = config["experiments"][wildcards.experiment]
    return f"results/{exp.get('train_dataset', exp['dataset'])}/store.zarr"


def vision_init_input(wildcards):
    """The pretrained vision.pt as an input file: Snakemake builds it first (rule pretrain makes
    results/pretrain/<name>/vision.pt) and retrains the folds whenever it is rebuilt. Its path
    also reaches the job through params: (the settings), so pointing init elsewhere reruns too."""
    init = jobs.vision_init(config, wildcards.variant)
    return [init] if init else []


TEXT_BANK = "results/text_bank.pt"


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
    return eval_jsons_of(wildcards.experiment, config["experiments"][wildcards.experiment]["variants"])


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
