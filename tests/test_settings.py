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


# Offenders that the branches rewriting these modules remove (the generator's settings, the
# readers' shared triangulation); delete an entry once its branch is merged.
def _schema_defaults() -> dict[str, list]:
    """{key: [its defaults in every section of the schema]} of the scalar and list defaults."""
    from smile_vlm.settings import schema

    found: dict[str, list] = {}

    def walk(node):
        if not isinstance(node, dict):
            return
        for key, prop in (node.get("properties") or {}).items():
            default = prop.get("default") if isinstance(prop, dict) else None
            if default is not None and not isinstance(default, dict):
                found.setdefault(key, []).append(tuple(default) if isinstance(default, list) else default)
            walk(prop)
        for key, value in node.items():
            if key != "properties" and isinstance(value, dict):
                walk(value)

    walk(schema())
    return found


def _repeats(value, defaults) -> bool:
    value = tuple(value) if isinstance(value, list) else value
    return value is not None and any(type(value) is type(d) and value == d for d in defaults)


def test_no_literal_repeats_a_schema_default():
    """A default written again in code drifts from the schema's: no parameter named like a setting
    defaults to its schema value, no ``.get("<setting>", <its default>)``, no CLI option default."""
    import ast

    defaults = _schema_defaults()
    offenders = []
    for path in sorted((REPO / "smile_vlm").rglob("*.py")):
        if path.name == "settings.py":
            continue
        where = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            found = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = node.args.posonlyargs + node.args.args
                pairs = list(zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults))
                pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
                found = [(a.arg, d, f"{a.arg}=") for a, d in pairs]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant):
                found = [(node.args[0].value, node.args[1], ".get")]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
                names = [a.value.lstrip("-").replace("-", "_") for a in node.args if isinstance(a, ast.Constant)]
                found = [(name, k.value, "--") for k in node.keywords if k.arg == "default" for name in names]
            for key, literal, how in found:
                try:
                    value = ast.literal_eval(literal)
                except ValueError:
                    continue  # a name: the default comes from somewhere, not a literal
                if isinstance(key, str) and key in defaults and value not in (True, False) \
                        and _repeats(value, defaults[key]):
                    shown = f".get({key!r}, {value!r})" if how == ".get" else f"{how}{key} {value!r}"
                    offenders.append(f"{where}:{literal.lineno}: {shown}")
    assert offenders == []


def test_no_private_name_is_imported_across_modules():
    import ast

    offenders = []
    for path in sorted((REPO / "smile_vlm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smile_vlm"):
                offenders += [f"{path.relative_to(REPO).as_posix()}: imports {alias.name}"
                              for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert sorted(offenders) == []


def test_no_inner_module_fills_in_render_or_index_defaults():
    """Settings are resolved where a command starts (settings.complete); the render, index and
    evaluation modules read complete settings and merge no section's defaults of their own."""
    calls = []
    for path in sorted((REPO / "smile_vlm").rglob("*.py")):
        if path.name != "settings.py":
            calls += [path.name for line in path.read_text().splitlines() if "section_defaults(" in line]
    assert len(calls) <= 3, calls
    for name in ("render.py", "renderer.py", "normalize.py", "sequence.py", "views.py", "evaluate.py", "report.py"):
        text = (REPO / "smile_vlm" / name).read_text()
        assert "section_defaults" not in text and "DEFAULT_EVALUATE" not in text, name


def test_no_module_is_over_450_lines():
    """Small rooms: a module past 450 lines holds two jobs (split it into named modules)."""
    long = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
            for path in (REPO / "smile_vlm").rglob("*.py")}
    long = {name: n for name, n in long.items() if n > 450}
    assert long == {}
