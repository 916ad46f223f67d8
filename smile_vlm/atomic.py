"""Atomic outputs: write beside the target, then rename.

A killed job leaves at most a ``.tmp-*`` sibling, never a file or directory with the final
name, so Snakemake (and every later rule) only ever sees complete outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    Works for files and for directories (e.g. a Zarr store): whatever the caller creates at
    the yielded path replaces ``target`` when the block exits without an exception.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller decides whether it becomes a file or a directory
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_csv(target: str | Path, frame) -> None:
    """Write a pandas DataFrame as CSV (no index column)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    write_text(target, buf.getvalue())


def save_image(target: str | Path, array, format: str | None = None) -> None:
    """Write an image array (H, W[, C] uint8) with Pillow, atomically."""
    from PIL import Image

    target = Path(target)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=format or _image_format(target))
    write_bytes(target, buf.getvalue())


def _image_format(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}.get(ext, ext.upper())


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
