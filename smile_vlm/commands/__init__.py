"""The ``smile-vlm`` subcommands, one module per stage; each module's ``register`` adds its
commands (the function and its arguments side by side). Shared argument types live here."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger("smile_vlm.cli")

SETTINGS_HELP = "settings as one JSON object (what the rule passes through params:)"
STAGES = ("preprocess", "training", "reporting", "deploy")  # modules of this package, in help order


def json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text[:80]}") from err


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


def dataset_names() -> list[str]:
    from smile_vlm.readers.names import CLASSES

    return list(CLASSES)
