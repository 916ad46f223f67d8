"""The Snakemake workflow end to end on a tiny synthetic configuration (tests/workflow/tiny.yaml).

One run of every target (`rule all`) is shared by the tests of this module; then dry runs check
that Snakemake reruns exactly what a change touches.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, overlays=(), timeout=1200) -> subprocess.CompletedProcess:
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), str(TINY), *map(str, overlays), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table (empty when nothing is to be done)."""
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return workdir


def config_overlay(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_manifests_hold_what_the_generator_wrote(workflow_run):
    for dataset in ("bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme"):
        written = json.loads((workflow_run / "results" / "synthetic" / dataset / "SYNTHETIC.json").read_text())
        manifest = pd.read_csv(workflow_run / "results" / dataset / "manifest.csv", dtype=str,
                               keep_default_na=False)
        rejects = pd.read_csv(workflow_run / "results" / dataset / "rejects.csv")
        assert rejects.empty, rejects
        assert sorted(manifest["subject"].unique()) == sorted(written["subjects"])
        frames = manifest.groupby("sample_id").size()
        for sample in written["samples"]:
            assert frames[sample["sample_id"]] == sample["n_frames"], sample["sample_id"]
            row = manifest[manifest["sample_id"] == sample["sample_id"]].iloc[0]
            assert row["labels"] == (sample.get("labels") or sample["label"]), sample["sample_id"]


@pytest.mark.slow
def test_stores_have_one_sample_per_scan_or_sequence(workflow_run):
    from smile_vlm.store import open_store, store_table

    for dataset in ("bu4dfe", "4dme"):
        path = workflow_run / "results" / dataset / "store.zarr"
        written = json.loads((workflow_run / "results" / "synthetic" / dataset / "SYNTHETIC.json").read_text())
        images = open_store(path)["images"]
        assert images.shape == (len(written["samples"]), 3, 48, 48, 3)
        table = store_table(path)
        expected = {s["sample_id"]: s.get("labels") or s["label"] for s in written["samples"]}
        assert dict(zip(table["sample_id"], table["labels"])) == expected
        # dynamic images: mid-grey where nothing moves, not a blank image
        sample = np.asarray(images[0])
        assert sample.std() > 1.0


@pytest.mark.slow
def test_folds_are_subject_independent_and_tables_complete(workflow_run):
    results = workflow_run / "results"
    for experiment in ("bu4dfe", "bp4d_cross", "4dme"):
        folds = pd.read_csv(results / experiment / "folds.csv", dtype={"subject": str})
        key = ["dataset", "subject"] if "dataset" in folds else ["subject"]
        for _, fold in folds.groupby("k"):
            train = set(map(tuple, fold[fold.split == "train"][key].values))
            test = set(map(tuple, fold[fold.split == "test"][key].values))
            assert train and test and not train & test

    table = pd.read_csv(results / "tables" / "bu4dfe.csv")
    ours = table[table.source == "ours"]
    # SMILE-VLM beside FACET-VLM supervised and prompt-aligned, each row naming its supervision
    assert dict(zip(ours.method, ours.supervision)) == {
        "smile_vlm": "class prompts (labels)", "facet_vlm_prompt": "class prompts (labels)",
        "facet_vlm_supervised": "cross-entropy on labels + class prompts (labels)"}
    assert (ours[ours.fold != "mean"].groupby("method").size() == 2).all()
    assert ours.accuracy.between(0, 100).all()  # learning itself: tests/test_learning.py
    reported = table[table.source == "reported"].set_index("method")
    assert reported.loc["SMILE-VLM", "accuracy"] == 96.57

    table_v = pd.read_csv(results / "tables" / "4dme.csv")
    assert {"smile_vlm (yaw -30 only)", "smile_vlm (yaw +30 only)", "smile_vlm (yaw +0 only)"} <= set(table_v.method)
    assert {"f1_repression", "accuracy_average"} <= set(table_v.columns)
    assert set(table_v[table_v.source == "ours"].decision) == {
        "above_uniform at logit scale 14.29 (training 1/tau, tau = 0.07)"}
    # from scratch and from the pretraining, side by side; the table says which start each row had
    inits = table_v[table_v.source == "ours"].groupby("method")["init"].first()
    assert inits["smile_vlm"] == "random" and inits["smile_vlm_pretrained"] == "results/pretrain/default/vision.pt"
    assert (results / "pretrain" / "default" / "vision.pt").exists()
    # fine-tuned while replaying the pretraining's corpus (the corpus.npz the pretrain job left beside it)
    replayed = pd.read_csv(results / "tables" / "bosphorus.csv").groupby("method")["init"].first()
    assert replayed["smile_vlm_pretrained_replay"] == "results/pretrain/default/vision.pt, replay 3"

    cross = json.loads((results / "bp4d_cross" / "eval" / "smile_vlm" / "fold0.json").read_text())
    assert cross["train_dataset"] == "bu4dfe" and cross["test_dataset"] == "bp4d"
    assert cross["classes"] == ["happiness", "disgust"]

    summary = (results / "tables" / "summary.md").read_text()
    for title in ("BU-3DFE Subset I", "Bosphorus", "BU-4DFE", "4DME"):
        assert title in summary
    ablation = pd.read_csv(results / "tables" / "ablation.csv")
    assert ablation["variant"].tolist() == [
        "smile_vlm", "smile_vlm_no_red_min", "smile_vlm_no_vl_align", "smile_vlm_no_mv_bt"]
    # ablation.folds: 1 compares every variant, the full model too, on fold 0 alone
    assert (ablation["n_folds"] == 1).all()
    assert sorted(p.name for p in (results / "bu4dfe" / "models" / "smile_vlm_no_mv_bt").iterdir()) == ["fold0"]
    assert len(list((results / "bu4dfe" / "models" / "smile_vlm").iterdir())) == 2


@pytest.mark.slow
def test_one_text_bank_serves_every_job(workflow_run):
    import torch

    bank = torch.load(workflow_run / "results" / "text_bank.pt", weights_only=True)
    assert bank["about"] == {"text_encoder": {"kind": "minilm", "name_or_path": None}, "prompts": "emotions"}
    assert {"happiness", "repression", "pain"} <= set(bank["classes"])  # every class of the prompt set
    assert bank["embeddings"].shape == (sum(bank["counts"]), 384)  # MiniLM's width


@pytest.mark.slow
def test_reruns_exactly_what_a_change_touches(workflow_run, tmp_path):
    # a finished run has nothing left to do
    assert planned_jobs(snakemake(workflow_run, "-n")) == {}

    # a training setting reruns training and what follows, never rendering
    train_change = config_overlay(tmp_path / "train.yaml", {"train": {"epochs": 3}})
    jobs = planned_jobs(snakemake(workflow_run, "-n", overlays=[train_change]))
    assert jobs.get("train", 0) > 0 and jobs.get("table", 0) > 0
    assert not {"synth", "index", "render", "pack"} & set(jobs)

    # other prompts re-embed the prompts once and retrain, but render nothing
    prompts = tmp_path / "prompts.yaml"
    shutil.copy(REPO / "smile_vlm" / "prompts" / "emotions.yaml", prompts)
    prompts_change = config_overlay(tmp_path / "prompts_change.yaml", {"prompts": {"name": str(prompts)}})
    jobs = planned_jobs(snakemake(workflow_run, "-n", overlays=[prompts_change]))
    assert jobs.get("text_bank") == 1 and jobs.get("train", 0) > 0 and jobs.get("evaluate", 0) > 0
    assert not {"synth", "index", "render", "pack"} & set(jobs)

    # a render setting reruns every render job and what depends on it, not the raw data
    render_change = config_overlay(tmp_path / "render.yaml", {"render": {"size": 40}})
    jobs = planned_jobs(snakemake(workflow_run, "-n", "results/bu4dfe/store.zarr", overlays=[render_change]))
    subjects = pd.read_csv(workflow_run / "results" / "bu4dfe" / "manifest.csv")["subject"].nunique()
    assert jobs.get("render") == subjects and jobs.get("pack") == 1
    assert not {"synth", "index"} & set(jobs)


@pytest.mark.slow
def test_a_moved_project_plans_no_job(workflow_run, tmp_path):
    """The checkout and the finished project copied elsewhere (a renamed folder, a cluster that
    mounts it at another path): no path of either enters a rule's inputs, outputs or params."""
    checkout, project = tmp_path / "checkout", tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for part in ("smile_vlm", "workflow", "envs", "tests/workflow"):
        shutil.copytree(REPO / part, checkout / part, symlinks=True, ignore=ignore)
    shutil.copy2(REPO / "Snakefile", checkout / "Snakefile")
    shutil.copytree(workflow_run, project, symlinks=True)  # copy2: modification times kept
    env = {**os.environ, "PYTHONPATH": str(checkout)}

    def moved(*args):
        command = [*SNAKEMAKE, "-s", str(checkout / "Snakefile"), "-d", str(project), "--configfile",
                   str(project / "config.yaml"), str(checkout / "tests" / "workflow" / "tiny.yaml"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)

    assert planned_jobs(moved("-n")) == {}
    for kind in ("input", "code"):
        result = moved("--list-changes", kind)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "", f"{kind}: {result.stdout[:1000]}"
    # `--list-changes params` names every output whatever changed (Snakemake 9 lists the files of
    # an empty ParamsChange), so params are checked by what they would rerun
    assert planned_jobs(moved("-n", "--rerun-triggers", "params")) == {}


def test_dry_run_of_the_default_config_and_schema_errors(tmp_path):
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "results/tables/bu4dfe.csv"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "synth" in result.stdout and "folds" in result.stdout

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.setdefault("render", {})["sise"] = 64  # a typo must not be silently ignored
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "sise" in result.stdout + result.stderr


@pytest.mark.slow
def test_speed_only_settings_rerun_nothing(workflow_run, tmp_path):
    # Threads and workers reach the jobs through threads:/resources:, never through params:.
    for section, key, value in (("render", "threads", 2), ("train", "threads", 2),
                                ("train", "workers", 1), ("index", "workers", 2)):
        change = config_overlay(tmp_path / f"{section}_{key}.yaml", {section: {key: value}})
        assert planned_jobs(snakemake(workflow_run, "-n", overlays=[change])) == {}, f"{section}.{key}"


@pytest.mark.slow
def test_jobs_log_what_they_do_and_benchmark_themselves(workflow_run):
    logs = workflow_run / "logs"
    epochs = [line for line in (logs / "train" / "bu4dfe" / "smile_vlm" / "fold0.log").read_text().splitlines()
              if " INFO smile_vlm.train: epoch " in line]
    assert len(epochs) == 2  # tiny.yaml: train.epochs 2
    # long jobs say how far they are: the first and the last step always, and every 15 s between
    pretraining = (logs / "pretrain" / "default.log").read_text()
    assert "pretraining corpus: 1 of 8 samples rendered" in pretraining  # tiny.yaml: 4 identities x 2
    assert "pretraining corpus: 8 of 8 samples rendered" in pretraining
    assert "epoch 1 of 1:" in pretraining
    subject_logs = list((logs / "render" / "bu4dfe").glob("*.log"))
    for log in subject_logs:
        rendered = re.findall(r"bu4dfe/[^:]+: (\d+) of (\d+) samples rendered", log.read_text())
        assert rendered[0][0] == "1" and rendered[-1][0] == rendered[-1][1], log
    assert "x compression" in (logs / "pack" / "bu4dfe.log").read_text()
    benchmarked = {p.relative_to(logs / "benchmarks").parts[0] for p in (logs / "benchmarks").rglob("*.tsv")}
    assert {"synth", "index", "render", "pack", "folds", "pretrain", "train", "evaluate", "table",
            "summary"} <= benchmarked
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "job_times.py"), str(logs / "benchmarks")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert int(rows["train"][1]) == len(list((logs / "benchmarks" / "train").rglob("*.tsv")))
