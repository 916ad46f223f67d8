import pytest
import yaml
from pathlib import Path

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
