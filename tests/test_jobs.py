"""What each workflow rule is given (smile_vlm.jobs): the library's decisions, called by the rules."""

import pytest

from smile_vlm import jobs
from smile_vlm.settings import PROMPT_DIR, PRETRAIN_RENDER_KEYS, resolve_settings


@pytest.fixture
def config():
    from test_settings import filled_config

    config = filled_config()
    config["variants"] = {
        "scratch": {"model": "smile_vlm"},
        "pretrained": {"base": "scratch", "vision": {"init": "results/pretrain/default/vision.pt"}},
        "opt_out": {"base": "scratch", "vision": {"init": None}},
    }
    return config


def test_vision_init_is_the_model_factorys_merge(config):
    from smile_vlm.models.factory import model_variant

    for init in (None, "results/pretrain/other/vision.pt"):
        config["encoders"]["vision"]["init"] = init
        for name in config["variants"]:
            settings = resolve_settings({"encoders": jobs.encoder_settings(config)})
            built = model_variant(jobs.variant_settings(config, name), settings)
            assert jobs.vision_init(config, name) == (built.get("vision") or {}).get("init"), (init, name)
    # a variant's own init wins, and its null opts out of the global one
    assert jobs.vision_init(config, "pretrained") == "results/pretrain/default/vision.pt"
    assert jobs.vision_init(config, "opt_out") is None
    assert jobs.vision_init(config, "scratch") == "results/pretrain/other/vision.pt"


def test_a_packaged_prompt_set_is_followed_by_its_content_not_its_path(config, tmp_path):
    assert config["prompts"]["name"] == "emotions"
    assert jobs.prompt_inputs(config) == []
    digest = jobs.prompt_digest(config)
    assert len(digest) == 64 and str(PROMPT_DIR) not in str(jobs.text_bank_settings(config))
    own = tmp_path / "mine.yaml"
    own.write_bytes((PROMPT_DIR / "emotions.yaml").read_bytes())
    config["prompts"]["name"] = str(own)
    assert jobs.prompt_inputs(config) == [str(own)] and jobs.prompt_digest(config) is None


def test_speed_only_keys_and_pretraining_inputs(config):
    config["render"]["threads"] = 7
    config["train"]["workers"] = 3
    assert "threads" not in jobs.result_settings(config, "render")
    assert "workers" not in jobs.train_settings(config, "e")["train"]
    pretrain = jobs.pretrain_settings(config, "default")
    assert set(pretrain["render"]) == set(PRETRAIN_RENDER_KEYS)  # camera_distance changes the corpus too
    assert not {"threads", "variants"} & set(pretrain["pretrain"])
    assert "init" not in pretrain["encoders"]["vision"]
    assert jobs.predict_options(config) == "--kind auto"  # the schema's predict.kind
