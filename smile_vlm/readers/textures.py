"""Texture files named inside a scan, resolved in the scan's own folder and never outside it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from smile_vlm.errors import ScanError


def resolve_texture(
    scan_dir: str | Path, name: str, *, source: str | Path | None = None, must_exist: bool = True
) -> Path:
    """The texture file ``name`` (as written inside a scan) resolved in the scan's own folder.

    A raw file must never make us read outside its folder, so '..' components, absolute or
    drive paths and symlinks that resolve elsewhere are refused. ``source`` names the file in
    the error (the mesh that referenced the texture); ``must_exist`` makes a missing texture an
    error, otherwise the (not yet existing) path inside the folder is returned.
    """
    scan_dir = Path(scan_dir)
    where = source if source is not None else scan_dir / name
    name = name.strip()
    if not name:
        raise ScanError(where, "empty texture name")
    # Check both path flavours: a name written on Windows ("..\\x.bmp", "C:\\x.bmp") is as
    # dangerous as a POSIX one, whatever machine reads it.
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        raise ScanError(where, f"texture path {name!r} is absolute; it must lie in the scan folder")
    if ".." in posix.parts or ".." in windows.parts:
        raise ScanError(where, f"texture path {name!r} leaves the scan folder ('..')")
    candidate = scan_dir / posix
    folder = os.path.realpath(scan_dir)
    target = os.path.realpath(candidate)
    if os.path.commonpath([folder, target]) != folder:
        raise ScanError(where, f"texture {name!r} links outside the scan folder")
    if must_exist and not candidate.is_file():
        raise ScanError(where, f"texture {name!r} not found in {scan_dir}")
    return candidate


def scan_texture(scan: Path, name: str | None, *, require_texture: bool, why_none: str) -> Path | None:
    """The texture a scan names, resolved in its folder; None when it names none or the file is
    missing, unless ``require_texture`` (then an error, ``why_none`` saying why there is none)."""
    if name is None:
        if require_texture:
            raise ScanError(scan, why_none)
        return None
    texture = resolve_texture(scan.parent, name, source=scan, must_exist=require_texture)
    return texture if texture.is_file() else None
