import re
from pathlib import Path

import pytest
import yaml

from smile_vlm.settings import merge_into, resolve_variant

REPO = Path(__file__).resolve().parents[1]


def test_variant_inherits_and_overrides_nested_keys():
    variants = {
        "full": {"model": "smile_vlm", "loss": {"alpha": 1.0, "beta": 1.0, "gamma": 0.5}},
        "no_red_min": {"base": "full", "loss": {"gamma": 0.0}},
        "no_red_min_small": {"base": "no_red_min", "projector": [64]},
    }
    resolved = resolve_variant(variants, "no_red_min_small")
    assert resolved == {
        "model": "smile_vlm",
        "loss": {"alpha": 1.0, "beta": 1.0, "gamma": 0.0},
        "projector": [64],
        "name": "no_red_min_small",
    }
    # the base itself is untouched by resolving a child
    assert variants["full"]["loss"]["gamma"] == 0.5


def test_variant_cycle_and_unknown_name_are_clear_errors():
    with pytest.raises(ValueError, match="cycle"):
        resolve_variant({"a": {"base": "b"}, "b": {"base": "a"}}, "a")
    with pytest.raises(KeyError, match="unknown variant 'c'"):
        resolve_variant({"a": {}}, "c")


def test_merge_into_replaces_lists_and_scalars():
    target = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    merge_into(target, {"a": {"y": [3]}, "b": {"z": 1}})
    assert target == {"a": {"x": 1, "y": [3]}, "b": {"z": 1}}


def test_every_shipped_variant_resolves():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for name in config["variants"]:
        assert resolve_variant(config["variants"], name)["model"] in {"smile_vlm", "facet_vlm"}
    for name, exp in config["experiments"].items():
        assert set(exp["variants"]) <= set(config["variants"]), name


# --------------------------------------------------------------------------- one default per setting

def filled_config() -> dict:
    """A minimal config with Snakemake's own schema validation filling in every default."""
    from snakemake.utils import validate

    from smile_vlm.settings import SCHEMA_PATH

    config = {"datasets": {name: {"root": f"raw/{name}"} for name in ("bu3dfe", "bu4dfe", "bp4d", "bosphorus", "4dme")},
              "experiments": {"e": {"dataset": "bu4dfe", "classes": ["anger"], "protocol": {}, "variants": ["v"]}},
              "variants": {"v": {}}}
    validate(config, str(SCHEMA_PATH), set_default=True)
    return config


def test_the_library_uses_the_schema_defaults_for_every_key():
    """What a direct library call uses when a key is left out equals what the workflow's validated
    config holds: one default per setting."""
    from smile_vlm import folds, pretrain
    from smile_vlm.augment import Augmenter
    from smile_vlm.models.encoders import load_vision_encoder
    from smile_vlm.settings import DEFAULT_EVALUATE, DEFAULT_TEXT_SPEC, DEFAULT_VISION_SPEC, resolve_settings
    from smile_vlm.synth import resolve_settings as synth_settings

    config = filled_config()
    train = resolve_settings({})["train"]
    augment = config["train"].pop("augment")
    assert {**train, "augment": None} == {**config["train"], "augment": None}
    assert Augmenter(16, train["augment"]).settings == augment
    assert resolve_settings({})["prompts"] == config["prompts"]
    assert DEFAULT_EVALUATE == config["evaluate"]
    assert DEFAULT_TEXT_SPEC == config["encoders"]["text"]
    assert DEFAULT_VISION_SPEC == config["encoders"]["vision"]
    assert folds.resolve_protocol({}) == {**config["experiments"]["e"]["protocol"], "classes": None}
    resolved = pretrain.resolve({})["pretrain"]
    expected = {k: v for k, v in config["pretrain"].items() if k not in ("threads", "variants")}
    assert {**resolved, "augment": None} == {**expected, "augment": None}
    assert synth_settings({}) == {k: v for k, v in config["synthetic"].items() if k != "root"}
    cnn = load_vision_encoder({})
    assert (cnn.image_size, cnn.out_dim > 0) == (config["encoders"]["vision"]["image_size"], True)


def test_variant_defaults_come_from_the_schema_and_are_not_filled_into_variants():
    from smile_vlm.models import build_model
    from smile_vlm.settings import VARIANT_DEFAULTS, schema

    config = filled_config()
    assert config["variants"]["v"] == {}  # `base:` inheritance must only see what a variant sets
    declared = schema()["$defs"]["variant_defaults"]["properties"]
    assert set(VARIANT_DEFAULTS["loss"]) == set(declared["loss"]["properties"])
    smile = build_model({"projector": [8], "vision": {"width": 4, "depth": 2, "image_size": 16}}, 2, 8)
    assert smile.loss_settings == VARIANT_DEFAULTS["loss"] == {k: p["default"] for k, p in declared["loss"]["properties"].items()}
    facet = build_model({"model": "facet_vlm", "projector": [8], "facet": {"heads": 2},
                         "vision": {"width": 4, "depth": 2, "image_size": 16}}, 2, 8)
    expected = {k: p["default"] for k, p in declared["facet"]["properties"].items() if k in facet.loss_settings}
    assert facet.loss_settings == expected


def test_no_module_keeps_a_defaults_table_of_its_own():
    """Settings defaults live in the schema only; a module-level DEFAULT... = {literal} would be a
    second default that can drift."""
    offenders = []
    for path in (REPO / "smile_vlm").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r'^(DEFAULT\w*|\w*_DEFAULTS|DEFAULTS)(: dict)? = \{\s*("|$)', line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line}")
    assert offenders == []
