"""Settings: the one set of defaults (read from the config schema), and config helpers shared by the
workflow and the library (plain data in, plain data out; no torch).

The schema (smile_vlm/configs/config.schema.yaml, also at workflow/schemas/) gives every key a
description and a default; the library takes its defaults from it, so a setting has exactly one
default and Snakemake's validation fills in the same values a direct library call uses.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "configs" / "config.schema.yaml"


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
PRETRAIN_DEFAULTS = {k: v for k, v in section_defaults("pretrain").items() if k not in ("threads", "variants")}

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
    for section, defaults in (("train", DEFAULT_TRAIN), ("prompts", DEFAULT_PROMPTS)):
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
        "evaluate": settings.get("evaluate") or {},
        "experiment": settings.get("experiment"),
    }


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
