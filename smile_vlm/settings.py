"""Settings: the one set of defaults (read from the config schema), and config helpers shared by the
workflow and the library (plain data in, plain data out; no torch).

The schema (smile_vlm/configs/config.schema.yaml, also at workflow/schemas/) gives every key a
description and a default; the library takes its defaults from it, so a setting has exactly one
default and Snakemake's validation fills in the same values a direct library call uses.

Settings are resolved once, where a command starts (``complete`` for one section,
``resolve_settings`` for a training job's sections); the modules below it receive complete
settings and never fill in a default themselves.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "configs" / "config.schema.yaml"
PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@functools.cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def defaults_of(node: dict) -> dict:
    """{key: default} of an object schema. A nested object whose default is {} stands for its keys'
    defaults (e.g. ``render`` in the top level); a ``$ref`` with default {} (``train.augment``) is
    an overrides dict and stays {}, its keys' defaults being the definition's (``DEFAULT_AUGMENT``)."""
    out = {}
    for key, prop in (node.get("properties") or {}).items():
        if "default" in prop and not (prop.get("properties") and prop["default"] == {}):
            out[key] = copy.deepcopy(prop["default"])
        elif prop.get("properties") or "$ref" in prop:
            out[key] = defaults_of(_resolve(prop))
    return out


def _resolve(node: dict) -> dict:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        return schema()["$defs"][name]
    return node


def section_defaults(*path: str) -> dict:
    """Defaults of a config section, e.g. ``section_defaults("train")``, ``("encoders", "vision")``."""
    node = schema()
    for key in path:
        node = _resolve(node["properties"][key])
    return defaults_of(node)


def definition_defaults(*path: str) -> dict:
    """Defaults of a schema definition, e.g. ``definition_defaults("experiment", "protocol")``."""
    node = schema()["$defs"][path[0]]
    for key in path[1:]:
        node = _resolve(node["properties"][key])
    return defaults_of(node)


def section_keys(*path: str) -> list[str]:
    """Every key a config section may hold (with or without a default), e.g. ``("encoders", "vision")``."""
    node = schema()
    for key in path:
        node = _resolve(node["properties"][key])
    return list(node["properties"])


def section_enum(*path: str) -> tuple:
    """The values a setting may take, e.g. ``section_enum("predict", "kind")``."""
    node = schema()
    for key in path:
        node = _resolve(node["properties"][key])
    return tuple(node["enum"])


def dataset_defaults(dataset: str) -> dict:
    """Per-dataset reading defaults of the ``datasets`` section (BP4D task classes, 4DME files)."""
    node = schema()["properties"]["datasets"]["properties"][dataset]
    out = {}
    for part in node.get("allOf", [node]):
        out.update(defaults_of(_resolve(part)))
    return out


DEFAULT_TRAIN = section_defaults("train")
DEFAULT_PROMPTS = section_defaults("prompts")
DEFAULT_EVALUATE = section_defaults("evaluate")
DEFAULT_AUGMENT = definition_defaults("augment")
DEFAULT_TEXT_SPEC = section_defaults("encoders", "text")
DEFAULT_VISION_SPEC = section_defaults("encoders", "vision")
VARIANT_DEFAULTS = definition_defaults("variant_defaults")
# The protocol's class set comes from the experiment's `classes`, not from the protocol section.
DEFAULT_PROTOCOL = {**definition_defaults("experiment", "protocol"), "classes": None}
# The pretrain section's keys that are no run setting: the job's threads and the named variants.
PRETRAIN_NOT_RUN = ("threads", "variants")
PRETRAIN_DEFAULTS = {k: v for k, v in section_defaults("pretrain").items() if k not in PRETRAIN_NOT_RUN}
# The render settings a pretraining corpus is drawn with (its own render_size replaces size).
PRETRAIN_RENDER_KEYS = ("yaws", "pitches", "mode", "radius_mm", "camera_distance", "nose_smoothing", "backend")
DEFAULT_PREDICT = section_defaults("predict")
PREDICT_KINDS = section_enum("predict", "kind")
DEFAULT_RENDER = section_defaults("render")
# What index_dataset reads: the schema's index section, the render.frames the sampled validation
# follows, and the reading options of the datasets section (a dataset's own keys arrive with its
# settings). require_texture is no config key: a direct call may ask for textures.
DEFAULT_INDEX = {**section_defaults("index"), "frames": DEFAULT_RENDER["frames"], "require_texture": False,
                 **dataset_defaults("bu4dfe"), **dataset_defaults("bp4d"), **dataset_defaults("4dme")}
# An experiment's table settings (the rule's `table` params): its config entry, and the prompts'
# source, which the table's rows name.
DEFAULT_EXPERIMENT = {**definition_defaults("experiment"), "prompts_source": DEFAULT_PROMPTS["source"]}
# The sections that ``complete`` fills in.
COMPLETED = {"render": DEFAULT_RENDER, "index": DEFAULT_INDEX, "evaluate": DEFAULT_EVALUATE, "prompts": DEFAULT_PROMPTS,
             "pretrain": PRETRAIN_DEFAULTS, "experiment": DEFAULT_EXPERIMENT}


def complete(section: str, given: dict | None = None) -> dict:
    """A section's complete settings: its schema defaults with ``given`` over them.

    Called once where a command starts; the modules it calls read keys and never fill in a default.
    """
    return {**copy.deepcopy(COMPLETED[section]), **copy.deepcopy(given or {})}


def prompt_file(name: str | Path) -> Path:
    """The YAML file of a prompt set (``prompts.name``): a file stem under ``smile_vlm/prompts/``
    (a set shipped with the package) or a path to a ``.yaml``/``.yml`` file."""
    return Path(name) if str(name).endswith((".yaml", ".yml")) else PROMPT_DIR / f"{name}.yaml"


def variant_vision(variant: dict, encoders: dict) -> dict:
    """A variant's vision encoder spec: ``encoders.vision`` with the variant's own ``vision`` keys
    over it, so a variant's ``init`` (null: from scratch) wins over ``encoders.vision.init``."""
    return {**((encoders or {}).get("vision") or {}), **((variant or {}).get("vision") or {})}

# Top-level settings sections; train_fold and evaluate_fold take the same dict. ``experiment`` is
# the experiment's name: it travels with the weights so that evaluation can refuse another one's.
SECTIONS = {"train", "encoders", "prompts", "classes", "protocol", "evaluate", "experiment"}
# Keys that change how a run executes but not what it computes: a resume may change them.
RUNTIME_KEYS = {"device", "threads", "workers", "gpus", "progress", "log_every"}


def resolve_settings(settings: dict | None) -> dict:
    """Defaults filled in, unknown keys refused, primitive containers only (fit in a checkpoint).

    ``classes`` (the experiment's class set) overrides ``protocol.classes`` for the sample filter.
    """
    settings = json.loads(json.dumps(settings or {}))
    unknown = set(settings) - SECTIONS
    if unknown:
        raise ValueError(f"unknown settings sections {sorted(unknown)} (known: {sorted(SECTIONS)})")
    if "score_scale" in (settings.get("evaluate") or {}):
        raise ValueError("evaluate.score_scale is no longer a setting: the multi-label decision uses the "
                         "model's training logit scale 1/tau; remove it from the config")
    for section, defaults in (("train", DEFAULT_TRAIN), ("prompts", DEFAULT_PROMPTS), ("evaluate", DEFAULT_EVALUATE)):
        extra = set(settings.get(section, {})) - set(defaults)
        if extra:
            raise ValueError(f"unknown {section} settings {sorted(extra)}")
    protocol = dict(settings.get("protocol") or {})
    if settings.get("classes"):
        protocol["classes"] = list(settings["classes"])
    return {
        "train": {**DEFAULT_TRAIN, **settings.get("train", {})},
        "prompts": {**DEFAULT_PROMPTS, **settings.get("prompts", {})},
        "encoders": settings.get("encoders") or {},
        "protocol": protocol,
        "evaluate": complete("evaluate", settings.get("evaluate")),
        "experiment": settings.get("experiment"),
    }


# The vision encoder's start when it has no pretrained file and no CLIP checkpoint: from scratch.
RANDOM_INIT = "random"
# WiSE-FT's mixing weight that is plain fine-tuning (also what an evaluation from before WiSE-FT used)
PLAIN_ALPHA = 1.0


def vision_init_name(variant: dict) -> str:
    """Where a trained vision encoder started: RANDOM_INIT (the compact CNN from scratch), the
    pretrained vision.pt of encoders.vision.init, or the CLIP checkpoint of kind hf_clip."""
    vision = variant.get("vision") or {}
    if vision.get("init"):
        return str(vision["init"])
    if vision.get("kind") == "hf_clip":
        return str(vision.get("name_or_path"))
    return RANDOM_INIT


def resolve_variant(variants: dict, name: str, _seen: tuple = ()) -> dict:
    """A variant's settings with ``base:`` inheritance applied.

    Nested dicts merge key by key, so an ablation only names what it changes, e.g.
    ``{base: smile_vlm, loss: {gamma: 0.0}}`` keeps every other loss setting of smile_vlm.
    """
    if name not in variants:
        raise KeyError(f"unknown variant {name!r}; known: {', '.join(sorted(variants))}")
    if name in _seen:
        raise ValueError(f"variant inheritance cycle: {' -> '.join(_seen + (name,))}")
    spec = copy.deepcopy(variants[name])
    base = spec.pop("base", None)
    resolved = resolve_variant(variants, base, _seen + (name,)) if base else {}
    merge_into(resolved, spec)
    resolved["name"] = name
    return resolved


def merge_into(target: dict, update: dict) -> dict:
    """Recursive dict update: nested dicts merge, everything else replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
