"""A bad config is refused before the first job, with one line per problem.

Unit tests call smile_vlm.configcheck on the validated default config; the dry runs check that the
Snakefile runs those checks (and the schema) before building any job, without importing torch.
"""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from smile_vlm.configcheck import (config_problems, datasets_for_targets, root_problems,
                                   schema_problems)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(scope="module")
def default_config():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(config, str(SCHEMA), set_default=True)
    return config


@pytest.fixture
def config(default_config):
    return copy.deepcopy(default_config)


def test_the_default_config_has_no_problem(config):
    assert schema_problems(config, SCHEMA) == []
    assert config_problems(config) == []
    assert root_problems(config, config["datasets"]) == []  # every root is the synthetic copy


def test_an_unknown_dataset(config):
    config["experiments"]["bu4dfe"]["dataset"] = "bu5dfe"
    [problem] = config_problems(config)
    assert problem.startswith("experiments.bu4dfe.dataset: unknown dataset 'bu5dfe' (known: 4dme, bosphorus")


def test_an_unknown_variant(config):
    config["experiments"]["bu4dfe"]["variants"].append("smile_vml")
    [problem] = config_problems(config)
    assert problem.startswith("experiments.bu4dfe.variants: unknown variant 'smile_vml'")


def test_replay_without_a_pretraining_or_with_facet_is_refused(config):
    config["variants"]["replaying"] = {"base": "smile_vlm", "replay": 1.0}
    [problem] = config_problems(config)
    assert problem.startswith("variants.replaying.replay: replays the corpus of the pretraining") and "replay: 0" in problem
    config["variants"]["replaying"]["vision"] = {"init": "results/pretrain/default/vision.pt"}
    assert config_problems(config) == []
    config["variants"]["replaying"]["model"] = "facet_vlm"
    [problem] = config_problems(config)
    assert problem.startswith("variants.replaying.replay: the pretraining trains SMILE-VLM's vision side")


def test_a_class_the_dataset_does_not_have(config):
    config["experiments"]["bu4dfe"]["classes"][0] = "angry"
    [problem] = config_problems(config)
    assert problem == ("experiments.bu4dfe.classes: 'angry' is not a class of bu4dfe "
                       "(its classes: anger, disgust, fear, happiness, sadness, surprise)")


def test_bp4d_task_map_adds_classes(config):
    config["datasets"]["bp4d"]["task_classes"]["T9"] = "boredom"
    config["experiments"]["bp4d"]["classes"].append("boredom")
    # bp4d's class set now has boredom; the prompt set does not
    assert config_problems(config) == ["experiments.bp4d.classes: prompt set 'emotions' has no prompts for boredom"]


def test_cross_dataset_train_classes_are_checked_against_the_training_dataset(config):
    config["experiments"]["bp4d_cross"]["protocol"]["train_classes"] = ["happiness", "pain"]
    [problem] = config_problems(config)
    assert problem.startswith("experiments.bp4d_cross.protocol.train_classes: 'pain' is not a class of bu4dfe")


def test_a_missing_prompt_set(config):
    config["prompts"]["name"] = "emotion"
    [problem] = config_problems(config)  # once, not once per experiment
    assert problem.startswith("prompts.name: no prompt file ") and "emotion.yaml" in problem


def test_ablation_names(config):
    config["ablation"]["variants"].append("smile_vlm_no_everything")
    config["ablation"]["experiments"].append("bu4fde")
    assert config_problems(config) == [
        "ablation.experiments: unknown experiment 'bu4fde' (known: 4dme, bosphorus, bp4d, bp4d_cross, "
        "bu3dfe_subset1, bu3dfe_subset2, bu4dfe)",
        f"ablation.variants: unknown variant 'smile_vlm_no_everything' (known: {', '.join(sorted(config['variants']))})",
    ]


def test_variant_inheritance_and_overrides(config):
    config["variants"]["mine"] = {"base": "smile_vml"}
    config["variants"]["small"] = {"base": "smile_vlm", "vision": {"widht": 8}}
    config["variants"]["nothing"] = {"loss": {"alpha": 0.0}}
    problems = config_problems(config)  # a variant's vision: may hold every key of the schema's encoders.vision
    assert problems == [
        f"variants.mine.base: unknown variant 'smile_vml'; known: {', '.join(sorted(config['variants']))}",
        "variants.small.vision: unknown keys widht (encoders.vision has depth, image_size, init, kind, local_files_only, name_or_path, width)",
        "variants.nothing: no model (set model: smile_vlm or facet_vlm, or base: another variant)",
    ]


def test_encoder_typos_are_schema_errors(config):
    config["encoders"]["vision"]["widht"] = 8
    config["encoders"]["text"]["knd"] = "minilm"
    assert schema_problems(config, SCHEMA) == [
        "encoders.text: Additional properties are not allowed ('knd' was unexpected)",
        "encoders.vision: Additional properties are not allowed ('widht' was unexpected)",
    ]


def test_hf_clip_needs_a_name(config):
    config["encoders"]["vision"]["kind"] = "hf_clip"
    assert config_problems(config) == [
        "encoders.vision: kind hf_clip needs name_or_path (a hub id or a local CLIP folder)"]


def test_datasets_of_targets(config):
    assert datasets_for_targets(config, ["results/tables/bu4dfe.csv"]) == {"bu4dfe"}
    assert datasets_for_targets(config, ["results/tables/bp4d_cross.csv"]) == {"bp4d", "bu4dfe"}
    assert datasets_for_targets(config, ["results/bosphorus/store.zarr"]) == {"bosphorus"}
    assert datasets_for_targets(config, ["results/bu3dfe_subset1/folds.csv"]) == {"bu3dfe"}
    assert datasets_for_targets(config, ["results/figures/ablation_bu4dfe.png"]) == {"bu4dfe"}
    assert datasets_for_targets(config, ["results/synthetic/bp4d/SYNTHETIC.json", "results/text_bank.pt"]) == set()
    everything = {"bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme"}
    assert datasets_for_targets(config, []) == everything  # rule all
    assert datasets_for_targets(config, ["results/tables/summary.md"]) == everything
    assert datasets_for_targets(config, ["all"]) == everything


def test_missing_roots(config, tmp_path):
    config["datasets"]["bu4dfe"]["root"] = str(tmp_path / "BU4DFE")
    (tmp_path / "4DME").mkdir()
    config["datasets"]["4dme"]["root"] = str(tmp_path / "4DME")
    assert root_problems(config, {"bu3dfe"}) == []
    problems = root_problems(config, {"bu4dfe", "4dme"})
    assert problems == [
        f"datasets.4dme.annotations: {tmp_path / '4DME' / '4DME_Labelling_Micro_release v1.xlsx'} does not exist",
        f"datasets.4dme.mesh_dir: {tmp_path / '4DME' / 'mesh_micro'} does not exist",
        f"datasets.bu4dfe.root: {tmp_path / 'BU4DFE'} does not exist (point it at the raw bu4dfe folder, "
        "or at results/synthetic/bu4dfe)",
    ]


# ---- the Snakefile ----------------------------------------------------------------------------
def dry_run(workdir: Path, overlay: dict, *targets: str, env=None) -> subprocess.CompletedProcess:
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
               str(REPO / "config.yaml"), str(workdir / "overlay.yaml"), "-n", *targets]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def config_errors(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("config error: ")]


def test_dry_run_lists_every_cross_reference_problem_at_once(tmp_path):
    overlay = {
        "experiments": {
            "bu4dfe": {"classes": ["angry", "disgust"], "variants": ["smile_vlm", "smile_vml"]},
            "extra": {"dataset": "bu5dfe", "classes": ["anger"], "protocol": {}, "variants": ["smile_vlm"]},
        },
        "ablation": {"variants": ["smile_vlm", "smile_vlm_no_vl_aling"]},
    }
    errors = config_errors(dry_run(tmp_path, overlay, "results/tables/bu4dfe.csv"))
    assert [e.split(":")[1].strip() for e in errors] == [
        "experiments.bu4dfe.variants", "experiments.bu4dfe.classes", "experiments.extra.dataset",
        "ablation.variants"]
    assert not (tmp_path / "results").exists() and not (tmp_path / ".snakemake" / "metadata").exists()


def test_dry_run_refuses_a_missing_root_of_a_requested_target_only(tmp_path):
    overlay = {"datasets": {"bosphorus": {"root": str(tmp_path / "Bosphorus")}}}
    errors = config_errors(dry_run(tmp_path, overlay, "results/bosphorus/store.zarr"))
    assert errors == [f"config error: datasets.bosphorus.root: {tmp_path / 'Bosphorus'} does not exist "
                      "(point it at the raw bosphorus folder, or at results/synthetic/bosphorus)"]
    # a target that does not read Bosphorus is planned as usual
    result = dry_run(tmp_path, overlay, "results/bu4dfe/manifest.csv")
    assert result.returncode == 0, result.stderr[-2000:]


def test_dry_run_reports_schema_errors_in_one_line_each(tmp_path):
    overlay = {"encoders": {"vision": {"widht": 8}}, "render": {"sise": 64}}
    errors = config_errors(dry_run(tmp_path, overlay))
    assert errors == ["config error: encoders.vision: Additional properties are not allowed ('widht' was unexpected)",
                      "config error: render: Additional properties are not allowed ('sise' was unexpected)"]


def test_building_the_dag_imports_no_torch(tmp_path):
    # A torch that cannot be imported: any import of it while Snakemake plans the jobs fails the run.
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch imported while building the DAG')\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(fake)}
    result = dry_run(tmp_path, {}, "results/tables/bu4dfe.csv", env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "folds" in result.stdout
