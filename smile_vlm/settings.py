"""Config helpers shared by the workflow and the library (plain data in, plain data out)."""

from __future__ import annotations

import copy


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
