"""The pretrained model asked directly (a vision.pt in predict) and WiSE-FT (smile_vlm.wise)."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from smile_vlm import cli, pretrain, wise
from smile_vlm.errors import ScanError
from smile_vlm.models import build_model, load_trained
from test_predict import hashed_text  # noqa: F401  (the module's text tower: a small hashed encoder)

VISION = {"kind": "cnn", "image_size": 32, "width": 8, "depth": 3}
TINY = {"identities": 4, "samples_per_identity": 3, "render_size": 32, "frames": 3, "epochs": 2,
        "batch_size": 6, "lr": 3e-3, "ict_dir": None}
SYNTH = {"subjects": {"bu3dfe": 1}, "resolution": 36, "texture_size": 32}


@pytest.fixture(scope="module")
def vision_pt(tmp_path_factory, hashed_text):
    out = tmp_path_factory.mktemp("pretrained") / "vision.pt"
    pretrain.pretrain({"pretrain": TINY, "encoders": {"vision": dict(VISION)}}, out, threads=1)
    return out


def fine_tuned(vision_pt, tmp_path, alpha=1.0, name="model.pt", **variant):
    """A model.pt that started from ``vision_pt``: its weights moved away from the pretraining's
    (what fine-tuning does), with the metadata train_fold saves."""
    vision = wise.read_vision(vision_pt)
    start = wise.pretrained_model(vision)
    generator = torch.Generator().manual_seed(1)
    moved = {key: value + 0.1 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
             for key, value in start.state_dict().items()}
    spec = {"model": "smile_vlm", "vision": {**VISION, "init": str(vision_pt)}, "name": "pretrained_wise",
            "wise_alpha": alpha, **variant}
    state = {"model": moved, "variant": spec, "n_views": int(vision["corpus"]["views"]),
             "text_dim": int(start.encoder.out_dim), "classes": ["happiness", "sadness"], "views": [],
             "settings": {"vision_init_sha256": hashlib.sha256(vision_pt.read_bytes()).hexdigest()}}
    path = tmp_path / name
    torch.save(state, path)
    return path, start, moved


def outputs(model, seed=0):
    images = torch.rand(3, model.n_views, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(images)["z_fused"]


def test_alpha_zero_is_the_pretrained_model_and_one_the_fine_tuned(vision_pt, tmp_path):
    path, start, moved = fine_tuned(vision_pt, tmp_path)
    plain, _ = load_trained(path)  # the variant's alpha is 1: plain fine-tuning
    at_zero, _ = load_trained(path, wise_alpha=0.0)
    half, _ = load_trained(path, wise_alpha=0.5)
    torch.testing.assert_close(outputs(at_zero), outputs(start), rtol=0, atol=0)
    tuned = copy.deepcopy(start)
    tuned.load_state_dict(moved)
    torch.testing.assert_close(outputs(plain), outputs(tuned), rtol=0, atol=0)
    for key, value in half.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (start.state_dict()[key] + moved[key]) / 2)
    assert not torch.allclose(outputs(half), outputs(start)) and not torch.allclose(outputs(half), outputs(tuned))

    mixed_variant, _ = load_trained(fine_tuned(vision_pt, tmp_path, alpha=0.0, name="zero.pt")[0])
    torch.testing.assert_close(outputs(mixed_variant), outputs(start), rtol=0, atol=0)


def test_deployable_model_holds_the_mixed_weights_once(vision_pt, tmp_path):
    path, start, moved = fine_tuned(vision_pt, tmp_path, alpha=0.25)
    state = torch.load(path, weights_only=True)
    baked = wise.baked(state)
    assert baked[wise.APPLIED_KEY] == 0.25
    torch.save(baked, tmp_path / "deploy.pt")
    vision_pt_gone = tmp_path / "deploy.pt"
    loaded, _ = load_trained(vision_pt_gone)  # not mixed a second time
    for key, value in loaded.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * start.state_dict()[key] + 0.25 * moved[key])


def test_another_architecture_or_a_rebuilt_pretraining_is_refused_in_one_line(vision_pt, tmp_path, hashed_text):
    path, _, _ = fine_tuned(vision_pt, tmp_path)
    state = torch.load(path, weights_only=True)
    wider = build_model({"model": "smile_vlm", "vision": {**VISION, "width": 16}}, state["n_views"], state["text_dim"])
    state["model"] = wider.state_dict()
    torch.save(state, tmp_path / "wider.pt")
    with pytest.raises(ScanError, match="another architecture") as error:
        wise.mix_state(torch.load(tmp_path / "wider.pt", weights_only=True), 0.5)
    assert str(vision_pt) in str(error.value) and "\n" not in str(error.value)

    state = torch.load(path, weights_only=True)
    state["settings"]["vision_init_sha256"] = "0" * 64
    with pytest.raises(ScanError, match="rebuilt since the fold model trained"):
        wise.mix_state(state, 0.5)
    state["variant"]["vision"].pop("init")
    with pytest.raises(ScanError, match="started from scratch"):
        wise.mix_state(state, 0.5)
    with pytest.raises(ValueError, match="within"):
        wise.interpolate({}, {}, 1.5)


def test_init_head_starts_projector_and_fusion_from_the_pretraining(vision_pt):
    vision = wise.read_vision(vision_pt)
    variant = {"model": "smile_vlm", "vision": {**VISION, "init": str(vision_pt)}, "init_head": True}
    model = build_model(variant, int(vision["corpus"]["views"]), 12)
    wise.start_head(model, variant)
    torch.testing.assert_close(model.state_dict(), wise.pretrained_model(vision).state_dict())
    with pytest.raises(ValueError, match="needs a pretraining"):
        wise.start_head(model, {**variant, "vision": VISION})
    untouched = build_model({**variant, "init_head": False}, int(vision["corpus"]["views"]), 12)
    before = copy.deepcopy(untouched.fusion.state_dict())
    wise.start_head(untouched, {**variant, "init_head": False})
    torch.testing.assert_close(untouched.fusion.state_dict(), before)


def test_predict_scores_scans_with_the_pretrained_vision_pt(vision_pt, tmp_path, hashed_text, capsys):
    from smile_vlm.predict import Predictor, predict_paths
    from smile_vlm.synth import generate
    from smile_vlm.synth.captions import caption

    generate("bu3dfe", tmp_path / "raw", SYNTH)
    scans = sorted((tmp_path / "raw").rglob("*_F3D.wrl"))[:3]
    classes = ["eyes_closed", "neutral"]
    predictor = Predictor(vision_pt, classes=classes)
    assert predictor.render_settings["size"] == TINY["render_size"] and predictor.classes == classes
    torch.testing.assert_close(predictor.model.state_dict(), wise.pretrained_model(wise.read_vision(vision_pt)).state_dict())
    records = predict_paths(vision_pt, scans, classes=classes)
    assert [r["status"] for r in records] == ["ok"] * 3
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) for r in records)
    # the scores are the pretrained model's cosines with the prompt embeddings
    rendered = predictor.render(predictor_samples(scans), tmp_path / "check")
    images = torch.from_numpy(rendered[0][0][None])
    with torch.no_grad():
        expected = predictor.model.class_scores(predictor.augmenter.clean(images), predictor.class_emb)
    torch.testing.assert_close(torch.from_numpy(predictor.score(rendered[0][0][None])["scores"]), expected)
    assert caption({43: 1.0}).startswith("a 3D face showing")

    with pytest.raises(ScanError, match="name the classes"):
        Predictor(vision_pt)
    with pytest.raises(ScanError, match="no fine-tuned model to mix"):
        Predictor(vision_pt, classes=classes, wise_alpha=0.5)
    assert cli.main(["predict", "--model", str(vision_pt), str(scans[0])]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("smile-vlm predict: error:") and "name the classes" in error
    with pytest.raises(SystemExit):
        cli.main(["predict", "--model", str(vision_pt), "--classes", "a,b", "--wise-alpha", "2", str(scans[0])])
    assert "not a number from 0 to 1" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert cli.main(["predict", "--model", str(junk), "--classes", "a,b", str(scans[0])]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("smile-vlm predict: error:") and str(junk) in error and "not a readable checkpoint" in error


def predictor_samples(scans):
    from smile_vlm.predict import find_samples

    return find_samples(scans[:1], False)
