"""The embedded default dataset: synthetic FACS-driven faces in the five raw formats.

``generate(dataset, root, settings)`` writes one dataset's raw layout under ``root`` exactly
as the real release lays it out, then ``root/SYNTHETIC.json`` (last, atomically) describing
what was written. Same settings and seed give identical bytes.
"""

from __future__ import annotations

from pathlib import Path

from smile_vlm import atomic
from smile_vlm.readers.names import CLASSES
from smile_vlm.synth.layouts import DATASETS, DEFAULTS, SUBJECT_WRITERS, resolve_settings, write_dataset

__all__ = ["generate", "DATASETS", "DEFAULTS", "resolve_settings"]


def generate(dataset: str, root: str | Path, settings: dict | None = None, workers: int = 1) -> dict:
    """Write synthetic ``dataset`` under ``root``; return the SYNTHETIC.json content.

    ``workers`` processes write the subjects (speed only: the bytes are the same)."""
    if dataset not in SUBJECT_WRITERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    resolved = resolve_settings(settings)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    subjects, samples = write_dataset(dataset, root, resolved, workers)
    summary = {
        "dataset": dataset,
        "classes": CLASSES[dataset],
        "subjects": subjects,
        "samples": samples,
        "settings": {key: (str(value) if key == "ict_dir" and value is not None else value)
                     for key, value in resolved.items()},
    }
    atomic.write_json(root / "SYNTHETIC.json", summary)
    return summary
