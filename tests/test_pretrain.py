"""FACS-captioned pretraining (smile_vlm.pretrain) and fine-tuning from it (encoders.vision.init)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from smile_vlm import corpus, pretrain
from smile_vlm.models.encoders import load_vision_encoder
from smile_vlm.errors import ScanError
from smile_vlm.synth import layouts
from smile_vlm.synth.identity import sample_identity
from ict_data import ICT_DIR

REPO = Path(__file__).resolve().parents[1]
HAVE_ICT = (ICT_DIR / "generic_neutral_mesh.obj").is_file()
needs_ict = pytest.mark.skipif(not HAVE_ICT, reason="ICT-FaceKit folder absent")

VISION = {"kind": "cnn", "image_size": 32, "width": 8, "depth": 3}
TINY = {"identities": 6, "samples_per_identity": 4, "render_size": 32, "frames": 3, "epochs": 3,
        "batch_size": 8, "lr": 3e-3, "ict_dir": str(ICT_DIR) if HAVE_ICT else None}


def tiny_settings(**overrides) -> dict:
    return {"pretrain": {**TINY, **overrides}, "encoders": {"vision": dict(VISION)}}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """One tiny corpus shared by the runs below (each run copies it into its own folder)."""
    folder = tmp_path_factory.mktemp("corpus")
    corpus.load_or_build_corpus(pretrain.resolve(tiny_settings()), folder / "corpus.npz")
    return folder


def run(tmp_path, corpus_dir, **overrides):
    out = tmp_path / "vision.pt"
    (tmp_path / "corpus.npz").write_bytes((corpus_dir / "corpus.npz").read_bytes())
    return pretrain.pretrain(tiny_settings(**overrides), out, threads=1), out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_dir):
    return run(tmp_path_factory.mktemp("pretrained"), corpus_dir)


# --------------------------------------------------------------------------- identities


def _evaluation_settings(face_source="procedural"):
    settings = layouts.resolve_settings({"face_source": face_source, "ict_dir": str(ICT_DIR)})
    return settings


def test_pretraining_identities_share_no_seed_key_or_subject_id_with_any_dataset():
    settings = pretrain.resolve({"pretrain": {"identities": 300, "ict_dir": str(ICT_DIR)}})["pretrain"]
    identities = corpus.corpus_identities(settings)
    evaluation = _evaluation_settings()
    eval_subjects = {sid for d in layouts.DATASETS for sid in layouts.subject_ids(d, 100)}
    assert not {i.subject for i in identities} & eval_subjects
    # a generator is fixed by its seed key: no pretraining key (identity or sample) is a dataset's
    eval_keys = {tuple(np.random.SeedSequence([evaluation["seed"], code, s, k]).entropy)
                 for code in range(len(layouts.DATASETS)) for s in range(50) for k in range(30)}
    pretrain_keys = {tuple(np.random.SeedSequence(corpus.identity_key(settings, i, k)).entropy)
                     for i in identities for k in range(settings["samples_per_identity"] + 1)}
    assert not pretrain_keys & eval_keys


def test_procedural_pretraining_faces_are_not_evaluation_faces():
    settings = pretrain.resolve({"pretrain": {"identities": 200}})["pretrain"]
    evaluation = _evaluation_settings()
    eval_faces = {sample_identity(layouts.rng_for(evaluation, d, s, 0))
                  for d in layouts.DATASETS for s in range(layouts.n_subjects(evaluation, d))}
    corpus_faces = {sample_identity(np.random.default_rng(corpus.identity_key(settings, i)))
                    for i in corpus.corpus_identities(settings)}
    assert len(corpus_faces) == 200 and not corpus_faces & eval_faces


@needs_ict
def test_ict_pretraining_faces_are_not_evaluation_faces():
    settings = pretrain.resolve({"pretrain": {"identities": 6, "ict_dir": str(ICT_DIR)}})["pretrain"]
    evaluation = _evaluation_settings("ict")
    ict = [i for i in corpus.corpus_identities(settings) if i.source == "ict"]
    assert len(ict) == 3
    ict_faces = [corpus.face_of(settings, i).rest_vertices for i in ict]
    for dataset in ("bu3dfe", "bu4dfe"):
        for s in range(layouts.n_subjects(evaluation, dataset)):
            face = layouts.make_face(evaluation, dataset, s, four_d=True)[0].rest_vertices
            assert all(np.abs(face - c).max() > 1.0 for c in ict_faces)  # mm


def test_unknown_setting_and_missing_ict_folder_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown pretrain settings \\['epoch'\\]"):
        pretrain.resolve({"pretrain": {"epoch": 3}})
    with pytest.raises(FileNotFoundError, match="pretrain.ict_dir .*generic_neutral_mesh.obj"):
        corpus.build_corpus(pretrain.resolve({"pretrain": {"identities": 2, "ict_dir": str(tmp_path)}}))


# --------------------------------------------------------------------------- corpus


def test_corpus_has_every_view_static_and_dynamic_samples_and_captions(corpus_dir):
    with np.load(corpus_dir / "corpus.npz") as data:
        images, captions, dynamic = data["images"], data["captions"].tolist(), data["dynamic"]
        sources = set(data["sources"].tolist())
    assert images.shape == (24, 3, 32, 32, 3) and images.dtype == np.uint8
    assert 0 < dynamic.sum() < len(dynamic)
    assert sources == ({"procedural", "ict"} if HAVE_ICT else {"procedural"})
    # views differ (yaw 0, -30, +30) and faces are drawn (not a blank frame)
    assert (images.reshape(24, 3, -1).std(axis=2) > 5).all()
    assert np.abs(images[:, 0].astype(int) - images[:, 1]).mean() > 5
    for text, is_dynamic in zip(captions, dynamic):
        assert text.startswith("a 3D face sequence" if is_dynamic else "a 3D face ")


# --------------------------------------------------------------------------- training


def test_tiny_pretraining_lowers_vl_align_and_writes_a_loadable_encoder(trained):
    metadata, path = trained
    monitored = [row["monitor_vl_align"] for row in metadata["history"]]
    assert monitored[-1] < 0.9 * monitored[0], monitored
    assert "monitor_au_align" in metadata["history"][0]  # the action-unit term is on by default
    assert not (path.parent / "checkpoint.pt").exists()
    saved = torch.load(path, weights_only=True)
    encoder = load_vision_encoder({"kind": "cnn", "image_size": 32, "width": 8, "depth": 3, "init": str(path)})
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, saved["state_dict"][name]), name
    fresh = load_vision_encoder({"kind": "cnn", "image_size": 32, "width": 8, "depth": 3})
    assert not torch.equal(fresh.features[0].weight, encoder.features[0].weight)


def test_fold_model_starts_from_encoders_vision_init(trained):
    from smile_vlm.models import build_model, model_variant

    _, path = trained
    settings = {"encoders": {"vision": {**VISION, "init": str(path)}}}
    model = build_model(model_variant({"model": "smile_vlm"}, settings), 3, 384)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(model.encoder.vision_encoder.features[0].weight, saved["features.0.weight"])


def test_pretraining_with_lr_zero_learns_nothing(tmp_path, corpus_dir):
    metadata, _ = run(tmp_path, corpus_dir, lr=0.0)
    monitored = [row["monitor_vl_align"] for row in metadata["history"]]
    assert max(monitored) - min(monitored) < 1e-6, monitored


def test_pretraining_lowers_the_action_unit_term(tmp_path, corpus_dir):
    history = run(tmp_path, corpus_dir, au_align=1.0, epochs=4)[0]["history"]
    monitored = [row["monitor_au_align"] for row in history]
    assert monitored[-1] < 0.9 * monitored[0], monitored
    assert all(row["au_align"] > 0 for row in history[1:])


def test_au_align_zero_drops_the_action_unit_term(tmp_path, corpus_dir):
    history = run(tmp_path, corpus_dir, au_align=0.0, epochs=1)[0]["history"]
    assert "monitor_au_align" not in history[0] and "au_align" not in history[1]


def test_action_unit_term_with_lr_zero_learns_nothing(tmp_path, corpus_dir):
    history = run(tmp_path, corpus_dir, au_align=1.0, lr=0.0)[0]["history"]
    monitored = [row["monitor_au_align"] for row in history]
    assert max(monitored) - min(monitored) < 1e-6, monitored


def test_mismatched_or_missing_init_is_one_line_error(trained, tmp_path):
    _, path = trained
    with pytest.raises(ScanError, match="asks for kind cnn, width 16") as error:
        load_vision_encoder({"kind": "cnn", "image_size": 32, "width": 16, "depth": 3, "init": str(path)})
    assert "\n" not in str(error.value) and "width 8" in str(error.value)
    with pytest.raises(ScanError, match="not found"):
        load_vision_encoder({"kind": "cnn", "init": str(tmp_path / "absent.pt")})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ScanError, match="not a readable pretrained vision encoder"):
        load_vision_encoder({"kind": "cnn", "init": str(tmp_path / "junk.pt")})


def test_killed_run_resumes_from_its_checkpoint(tmp_path, corpus_dir, trained, monkeypatch):
    """Killed during epoch 3, rerun: it resumes after epoch 2 and ends as the uninterrupted run."""
    uninterrupted, _ = trained
    calls = []
    monitor = pretrain.monitor_alignment

    def dies_in_epoch_3(*args):
        calls.append(1)
        if len(calls) == 4:  # initial value, epochs 1 and 2, then epoch 3
            raise KeyboardInterrupt
        return monitor(*args)

    monkeypatch.setattr(pretrain, "monitor_alignment", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, corpus_dir)
    assert (tmp_path / "checkpoint.pt").is_file() and not (tmp_path / "vision.pt").exists()
    calls.clear()
    monkeypatch.setattr(pretrain, "monitor_alignment", lambda *args: calls.append(1) or monitor(*args))
    resumed, _ = run(tmp_path, corpus_dir)
    assert len(calls) == 2  # the start value (discarded for the checkpoint's) and epoch 3 only
    assert [r["monitor_vl_align"] for r in resumed["history"]] == pytest.approx(
        [r["monitor_vl_align"] for r in uninterrupted["history"]], abs=1e-4)


# --------------------------------------------------------------------------- workflow


def test_schema_defaults_are_the_library_defaults():
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    section = schema["properties"]["pretrain"]["properties"]
    assert {k: v["default"] for k, v in section.items() if k not in ("threads", "variants")} == pretrain.DEFAULTS
    assert schema["properties"]["encoders"]["properties"]["vision"]["properties"]["init"]["default"] is None


def _snakemake(workdir: Path, *args: str, overlays=()):
    import subprocess
    import sys

    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
               str(REPO / "config.yaml"), str(REPO / "tests" / "workflow" / "tiny.yaml"), *map(str, overlays), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


def _planned(output: str) -> set[str]:
    """The rules of a dry run's 'Job stats' table."""
    import re

    if "Nothing to be done" in output:
        return set()
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.M)}


def _overlay(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_workflow_pretrains_once_and_folds_start_from_it(tmp_path):
    tiny = _overlay(tmp_path / "pretrain.yaml", {"pretrain": {
        "identities": 4, "samples_per_identity": 3, "render_size": 32, "frames": 3, "epochs": 2, "batch_size": 6}})
    init = _overlay(tmp_path / "init.yaml", {"encoders": {"vision": {"init": "results/pretrain/default/vision.pt"}}})
    model = "results/bu4dfe/models/smile_vlm/fold0/model.pt"
    _snakemake(tmp_path, "--cores", "2", model, overlays=[tiny, init])
    pretrained = torch.load(tmp_path / "results/pretrain/default/vision.pt", weights_only=True)
    state = torch.load(tmp_path / model, weights_only=True)
    assert state["variant"]["vision"]["init"] == "results/pretrain/default/vision.pt"
    assert pretrained["architecture"]["image_size"] == 32  # tiny.yaml's encoders.vision.image_size
    # a training setting reruns training only; a pretraining setting reruns pretraining and training
    epochs = _overlay(tmp_path / "epochs.yaml", {"train": {"epochs": 1}})
    assert _planned(_snakemake(tmp_path, "-n", model, overlays=[tiny, init, epochs])) == {"train"}
    more = _overlay(tmp_path / "more.yaml", {"pretrain": {"epochs": 3}})
    assert _planned(_snakemake(tmp_path, "-n", model, overlays=[tiny, more, init])) == {"pretrain", "train"}
    # without init, the folds train from scratch and do not depend on the pretraining
    assert _planned(_snakemake(tmp_path, "-n", model, overlays=[tiny, more])) == {"train"}


def test_cli_refuses_a_bad_pretrain_setting_in_one_line(tmp_path, capsys):
    from smile_vlm.cli import main

    assert main(["pretrain", "--settings", '{"pretrain": {"epoch": 1}}', "--out", str(tmp_path / "vision.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown pretrain settings ['epoch']" in err[0]
    assert not (tmp_path / "vision.pt").exists()
