"""Refuse a PyOpenGL that cannot create an offscreen context, with the command that fixes it.

pyrender 0.1.45 pins PyOpenGL 3.1.0, whose OSMesa binding lacks ``OSMesaCreateContextAttribs``:
every offscreen render then fails deep inside pyrender with an ImportError that names neither
PyOpenGL's version nor the fix. This project depends on pyrender2 (the same renderer, published
without that pin) and PyOpenGL 3.1.10, but a venv can still hold an old PyOpenGL (an earlier
install, or pyrender 0.1.45 installed later). The renderer calls :func:`require_pyopengl` before
it imports pyrender.
"""

from __future__ import annotations

import sys
from importlib import metadata

# OSMesaCreateContextAttribs exists in PyOpenGL's OSMesa binding from 3.1.4 on.
MIN_OSMESA_PYOPENGL = (3, 1, 4)


class OpenGLSetupError(ImportError):
    """The installed PyOpenGL cannot render offscreen; the message says what to run."""


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:
            break
    return tuple(numbers)


def pinned(name: str, fallback: str) -> str:
    """This package's requirement on ``name`` as pyproject.toml pins it (e.g. ``PyOpenGL==3.1.10``)."""
    try:
        requirements = metadata.requires("smile-vlm") or []
    except metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        if requirement.split("==")[0].strip().lower() == name.lower() and "==" in requirement:
            return requirement.split(";")[0].strip()
    return fallback


def fix_command() -> str:
    """The pip command that makes this environment render; pyrender 0.1.45, if present, goes too
    (it would pin PyOpenGL back to 3.1.0 and shares pyrender2's module files)."""
    pip = f"{sys.executable} -m pip"
    pyopengl = pinned("PyOpenGL", "PyOpenGL==3.1.10")
    try:
        metadata.version("pyrender")
    except metadata.PackageNotFoundError:
        return f"{pip} install '{pyopengl}'"
    pyrender2 = pinned("pyrender2", "pyrender2==0.2.2")
    return f"{pip} uninstall -y pyrender && {pip} install --force-reinstall --no-deps '{pyrender2}' '{pyopengl}'"


def require_pyopengl(platform: str = "osmesa") -> str:
    """PyOpenGL's version, or :class:`OpenGLSetupError` when ``platform`` cannot work with it.

    Reads the installed distribution's metadata only: importing OpenGL here would fix the GL
    platform before the renderer has chosen it.
    """
    try:
        version = metadata.version("PyOpenGL")
    except metadata.PackageNotFoundError:
        raise OpenGLSetupError(f"PyOpenGL is not installed; run: {fix_command()}") from None
    if platform == "osmesa" and _version_tuple(version) < MIN_OSMESA_PYOPENGL:
        raise OpenGLSetupError(
            f"PyOpenGL {version} cannot create an OSMesa context (it needs "
            f"{'.'.join(map(str, MIN_OSMESA_PYOPENGL))} or later; pyrender 0.1.45 pins 3.1.0); "
            f"run: {fix_command()}"
        )
    return version
