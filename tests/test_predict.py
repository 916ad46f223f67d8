"""`smile-vlm predict` and the deployable model on a tiny synthetic BU-4DFE store built here.

The store goes through the real index -> render -> pack path, so predicting on its raw sequences
must reproduce the store's pixels and, with a fold model, the evaluation of that fold.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import smile_vlm.models.encoders as encoders
from smile_vlm import cli
from smile_vlm.errors import ScanError
from smile_vlm.readers.names import BU4DFE_FOLDERS, CLASSES
from smile_vlm.settings import complete
from test_train import HashedTextEncoder

EMOTIONS = CLASSES["bu4dfe"]
VARIANT = {"model": "smile_vlm", "projector": [16], "fusion_hidden": 8}
RENDER = {"size": 48, "frames": 4, "yaws": [0, -30, 30], "pitches": [0], "mode": "shaded", "radius_mm": 90}
SETTINGS = {"train": {"epochs": 2, "batch_size": 8, "threads": 1, "progress": False, "seed": 0},
            "encoders": {"vision": {"kind": "cnn", "width": 4, "depth": 2, "image_size": 16}},
            "classes": EMOTIONS, "protocol": {"folds": 2}}
SYNTH = {"subjects": {"bu4dfe": 4, "bu3dfe": 1, "bosphorus": 1}, "frames": {"bu4dfe": 6},
         "resolution": 36, "resolution_4d": 28, "texture_size": 32}


@pytest.fixture(scope="module")
def hashed_text():
    """Every text tower of this module: a small deterministic encoder instead of MiniLM."""
    encoder = HashedTextEncoder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoders, "load_text_encoder", lambda spec=None: encoder)
        yield encoder


def bu4dfe_store(root, synth: dict, render: dict):
    """Synthetic BU-4DFE written, indexed, rendered and packed as the workflow's rules do it."""
    from smile_vlm.index import write_index
    from smile_vlm.render import render_shard
    from smile_vlm.store import pack_store
    from smile_vlm.synth import generate
    from smile_vlm.views import render_views

    generate("bu4dfe", root / "raw", synth)
    write_index("bu4dfe", root / "raw", {"workers": 1}, root / "manifest.csv", root / "rejects.csv")
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    shards = []
    for subject in sorted(manifest["subject"].unique()):
        render_shard(root / "manifest.csv", "bu4dfe", subject, root / "views" / subject, complete("render", render))
        shards.append(root / "views" / subject / "index.csv")
    store = root / "store.zarr"
    pack_store(root / "manifest.csv", shards, store, "bu4dfe",
               {"classes": EMOTIONS, "multi_label": False, "views": render_views(render), "render": render})
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, hashed_text):
    """Raw BU-4DFE sequences, their store, fold 0 trained and evaluated, and the final model."""
    from smile_vlm.evaluate import evaluate_fold
    from smile_vlm.final import train_final
    from smile_vlm.folds import write_folds
    from smile_vlm.train import train_fold

    root = tmp_path_factory.mktemp("predict")
    store = bu4dfe_store(root, SYNTH, RENDER)
    folds = root / "folds.csv"
    write_folds(store, {"folds": 2, "classes": EMOTIONS}, folds)
    fold_model = train_fold(store, folds, 0, 0, VARIANT, SETTINGS, root / "fold0")
    evaluation = evaluate_fold(store, folds, 0, 0, fold_model, VARIANT,
                               {**SETTINGS, "evaluate": {"linear_probe": False, "single_view": False}},
                               root / "fold0.json")
    final = train_final(store, folds, VARIANT, SETTINGS, root / "final")
    return {"root": root, "store": store, "folds": folds, "fold_model": fold_model, "evaluation": evaluation,
            "final": final}


def test_predict_renders_the_store_pixels_and_reproduces_the_evaluation(trained):
    from smile_vlm.predict import Predictor, find_samples, predict_paths
    from smile_vlm.store import open_store, store_table

    raw, evaluation = trained["root"] / "raw", trained["evaluation"]
    folders = [raw / subject for subject in evaluation["test_subjects"]]

    predictor = Predictor(trained["fold_model"])
    samples = find_samples(folders, predictor.sequences)
    assert predictor.sequences and len(samples) == 6 * len(folders)
    rendered = predictor.render(samples, trained["root"] / "check")
    table, images = store_table(trained["store"]), open_store(trained["store"])["images"]
    row_of = dict(zip(table["sample_id"], table.index))
    for position, sample in enumerate(samples):
        sample_id = f"{sample.path.parent.name}_{sample.path.name}"
        views, used, failed = rendered[position]
        assert not failed and used == [0, 2, 3, 5]  # 4 of 6 frames, spread as render samples them
        np.testing.assert_array_equal(views, images[row_of[sample_id]])

    records = predict_paths(trained["fold_model"], folders)
    truth = [EMOTIONS.index(BU4DFE_FOLDERS[sample.path.name]) for sample in samples]
    predicted = [EMOTIONS.index(record["top_class"]) for record in records]
    confusion = np.zeros((6, 6), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    assert confusion.tolist() == evaluation["confusion"]["matrix"]
    weights = np.array([list(record["view_weights"].values()) for record in records])
    for k, name in enumerate(EMOTIONS):
        np.testing.assert_allclose(weights[np.array(truth) == k].mean(axis=0), evaluation["view_weights"][name],
                                   atol=1e-5)


def test_final_model_trains_every_subject_and_carries_its_preparation(trained, monkeypatch):
    import smile_vlm.store as store_module
    from smile_vlm.predict import predict_paths

    state = torch.load(trained["final"], map_location="cpu", weights_only=True)
    deploy = state["deploy"]
    assert deploy["train_subjects"] == ["F001", "F002", "M001", "M002"]
    assert state["n_train"] == 24 and deploy["samples_per_class"] == {name: 4 for name in EMOTIONS}
    assert deploy["render"] == RENDER and deploy["kind"] == "dynamic image" and deploy["image_size"] == 48
    assert tuple(deploy["class_embeddings"].shape) == (6, 12) and state["fold"] is None
    run_log = (trained["root"] / "final" / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(run_log) == SETTINGS["train"]["epochs"]
    fold_state = torch.load(trained["fold_model"], map_location="cpu", weights_only=True)
    assert not all(torch.equal(state["model"][k], fold_state["model"][k]) for k in fold_state["model"])

    # Everything predict needs is in the file: no store, no text tower.
    def no_store(path):
        raise AssertionError(f"predict opened the store {path}")

    monkeypatch.setattr(store_module, "open_store", no_store)
    monkeypatch.setattr(encoders, "load_text_encoder", lambda spec=None: pytest.fail("text tower loaded"))
    out_csv, out_json = trained["root"] / "one.csv", trained["root"] / "one.json"
    sequence = trained["root"] / "raw" / "F001" / "Happy"
    predict_paths(trained["final"], [sequence], out_csv, out_json)
    table = pd.read_csv(out_csv, keep_default_na=False)
    assert table["input"].tolist() == [str(sequence)] and table["status"].tolist() == ["ok"]
    probabilities = table[[f"p_{name}" for name in EMOTIONS]].to_numpy()
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert table["top_class"][0] == EMOTIONS[int(probabilities.argmax())]
    assert table[["w_yaw+0", "w_yaw-30", "w_yaw+30"]].to_numpy().sum() == pytest.approx(1.0, abs=1e-5)
    assert table["frames"][0] == "0|2|3|5" and table["n_frames"][0] == 4
    written = json.loads(out_json.read_text())
    assert written["classes"] == EMOTIONS and written["predictions"][0]["frames"] == [0, 2, 3, 5]


def test_model_card_quotes_the_checkpoint_and_the_table(trained):
    from smile_vlm.final import model_card

    table = trained["root"] / "table.csv"
    pd.DataFrame([
        {"source": "ours", "method": "smile_vlm", "fold": "0", "accuracy": 50.0, "accuracy_std": None},
        {"source": "ours", "method": "smile_vlm", "fold": "1", "accuracy": 70.0, "accuracy_std": None},
        {"source": "ours", "method": "smile_vlm", "fold": "mean", "accuracy": 60.0, "accuracy_std": 14.14},
        {"source": "reported", "method": "SMILE-VLM", "fold": "mean", "accuracy": 96.57, "accuracy_std": None},
    ]).to_csv(table, index=False)
    card = model_card(trained["final"], table, "bu4dfe")
    assert "subjects: 4 (F001, F002, M001, M002)" in card
    assert "anger 4, disgust 4" in card and "samples: 24" in card
    assert "Mean over 2 subject-independent folds" in card and "- accuracy: 60 ± 14.1" in card
    assert "data: synthetic faces written by smile-vlm synth" in card
    assert "96.57" not in card  # the paper's number is not this model's
    assert "Not validated for" in card and "4 frames sampled" in card

    other = table.with_name("other.csv")
    pd.read_csv(table).replace({"method": {"smile_vlm": "facet_vlm"}}).to_csv(other, index=False)
    with pytest.raises(ScanError, match="no mean row of 'smile_vlm'"):
        model_card(trained["final"], other, "bu4dfe")
    with pytest.raises(ScanError, match="not a deployable model"):
        model_card(trained["fold_model"], table, "bu4dfe")


def test_public_static_layouts_and_a_corrupt_file(trained, tmp_path):
    """A BU-3DFE F3D .wrl without its texture, a Bosphorus .bnt with its .lm3, a .ply and a broken
    .wrl: the three scans predict in the shaded default, the broken one gives its reader's reason."""
    import trimesh

    from smile_vlm.predict import predict_paths
    from smile_vlm.readers import read_mesh
    from smile_vlm.synth import generate

    generate("bu3dfe", tmp_path / "bu3dfe", SYNTH)
    generate("bosphorus", tmp_path / "bosphorus", SYNTH)
    scans = tmp_path / "scans"
    scans.mkdir()
    wrl = next((tmp_path / "bu3dfe" / "F0001").glob("*_HA04*_F3D.wrl"))
    shutil.copy(wrl, scans / wrl.name)  # its .bmp stays behind
    bnt = next((tmp_path / "bosphorus" / "BosphorusDB" / "bs000").glob("*_E_HAPPY_0.bnt"))
    for suffix in (".bnt", ".lm3"):
        shutil.copy(bnt.with_suffix(suffix), scans / bnt.with_suffix(suffix).name)
    mesh = read_mesh(wrl)
    trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(scans / "face.ply")
    broken = scans / "broken.wrl"
    broken.write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2")
    with pytest.raises(ScanError) as reader_error:
        read_mesh(broken)

    records = {r["input"]: r for r in predict_paths(trained["final"], [scans], kind="scan")}
    assert set(records) == {str(scans / name) for name in (wrl.name, bnt.name, "face.ply", "broken.wrl")}
    for name in (wrl.name, bnt.name, "face.ply"):
        record = records[str(scans / name)]
        assert record["status"] == "ok" and record["n_frames"] == 1, record
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # The same geometry through two readers renders to the same prediction.
    assert records[str(scans / "face.ply")]["probabilities"] == pytest.approx(
        records[str(scans / wrl.name)]["probabilities"], abs=1e-4)
    failed = records[str(broken)]
    assert failed["status"] == "error" and failed["error"] == str(reader_error.value)


def test_cli_prints_the_table_and_reports_user_errors(trained, capsys, tmp_path):
    sequence = trained["root"] / "raw" / "M002" / "Surprise"
    out = tmp_path / "cli.csv"
    assert cli.main(["predict", "--model", str(trained["final"]), str(sequence), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(sequence) in printed and "happiness" in printed.splitlines()[0]
    assert pd.read_csv(out)["status"].tolist() == ["ok"]

    broken = tmp_path / "broken.bnt"
    broken.write_bytes(b"\x00" * 10)
    assert cli.main(["predict", "--model", str(trained["final"]), str(broken)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("smile-vlm predict: error:") and str(broken) in error

    assert cli.main(["predict", "--model", str(tmp_path / "none.pt"), str(sequence)]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(trained["final"]), str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_zero_shot_with_new_classes_and_checkpoints_that_do_not_fit(trained, tmp_path, monkeypatch):
    from smile_vlm.predict import Predictor, predict_paths

    sequence = trained["root"] / "raw" / "F002" / "Angry"
    records = predict_paths(trained["final"], [sequence], classes=["happiness", "contempt"])
    assert set(records[0]["probabilities"]) == {"happiness", "contempt"}
    assert sum(records[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # "contempt" is not in the prompt file: its prompts are the file's templates with its name.
    predictor = Predictor(trained["final"], classes=["happiness", "contempt"])
    trained_only = Predictor(trained["final"])
    torch.testing.assert_close(predictor.class_emb[0], trained_only.class_emb[3])

    with pytest.raises(ScanError, match="at least two classes"):
        Predictor(trained["final"], classes=["happiness"])
    monkeypatch.setattr(encoders, "load_text_encoder", lambda spec=None: HashedTextEncoder(dim=8))
    with pytest.raises(ScanError, match="8-d embeddings"):
        Predictor(trained["final"], classes=["happiness", "contempt"])

    state = torch.load(trained["final"], map_location="cpu", weights_only=True)
    state["deploy"]["render"] = {**state["deploy"]["render"], "yaws": [0, 30]}
    other_views = tmp_path / "views.pt"
    torch.save(state, other_views)
    with pytest.raises(ScanError, match="trained on"):
        Predictor(other_views)
    not_a_model = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, not_a_model)
    with pytest.raises(ScanError, match="not a trained smile-vlm model"):
        Predictor(not_a_model)


def test_subject_folders_and_merged_table(tmp_path):
    from smile_vlm.predict import merge_predictions, subject_folders

    for folder in ("S2/Happy", "S1", "notes"):
        (tmp_path / "in" / folder).mkdir(parents=True)
    (tmp_path / "in" / "S2" / "Happy" / "000.wrl").write_text("#VRML V2.0 utf8\n")
    (tmp_path / "in" / "S1" / "scan.PLY").write_text("ply\n")
    (tmp_path / "in" / "notes" / "readme.txt").write_text("no scans here\n")
    assert subject_folders(tmp_path / "in") == ["S1", "S2"]

    for subject, frames in (("S1", ""), ("S2", "0|2")):
        pd.DataFrame([{"input": f"{subject}/x", "status": "ok", "frames": frames}]).to_csv(tmp_path / f"{subject}.csv",
                                                                                           index=False)
    merged = merge_predictions([tmp_path / "S1.csv", tmp_path / "S2.csv"], tmp_path / "all.csv")
    assert merged["subject"].tolist() == ["S1", "S2"] and merged["frames"].tolist() == ["", "0|2"]
    assert pd.read_csv(tmp_path / "all.csv", keep_default_na=False, dtype=str)["frames"].tolist() == ["", "0|2"]


def test_a_broken_frame_leaves_the_sequence_with_the_others(trained, tmp_path):
    from smile_vlm.predict import predict_paths

    sequence = tmp_path / "Happy"
    shutil.copytree(trained["root"] / "raw" / "F001" / "Happy", sequence)
    (sequence / "002.wrl").write_text("#VRML V2.0 utf8\n")  # frame 2 is one of the 4 sampled
    (record,) = predict_paths(trained["final"], [sequence])
    assert record["status"] == "ok" and record["frames"] == [0, 3, 5]
    assert len(record["skipped"]) == 1 and record["skipped"][0].startswith(str(sequence / "002.wrl"))
