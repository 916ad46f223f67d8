"""Raw readers of the five datasets; every one returns plain arrays or a ``Mesh``.

Bad input always raises ``ScanError(path, reason)``. Submodules are imported inside
``read_mesh`` so that each reader can import ``resolve_texture`` from here without a cycle.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.mesh import Mesh
from smile_vlm.settings import section_defaults

MESH_EXTENSIONS = (".wrl", ".obj", ".bnt")

# Per-file size limit (config key index.max_file_mb, whose schema default this is). The
# largest real scans are a few MB (a BU-3DFE F3D .wrl about 3 MB, a ~35k-vertex BU-4DFE or BP4D
# frame 3-6 MB, a Bosphorus .bnt under 2 MB), so 64 MB leaves room for denser scanners while
# keeping a reader's peak memory on any single corrupt file well under 1 GB
# (benchmarks/bench_corrupt_memory.py).
DEFAULT_MAX_FILE_MB = section_defaults("index")["max_file_mb"]
FLOAT32_MAX = float(np.finfo(np.float32).max)


def max_bytes_of(max_file_mb: float | None) -> int:
    return int(float(DEFAULT_MAX_FILE_MB if max_file_mb is None else max_file_mb) * 1024 * 1024)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | Path, max_bytes: int | None = None) -> int:
    """The size of ``path`` after checking that it is a regular file no larger than the limit.

    Reading a FIFO blocks forever and a device (or a link to /dev/zero) never ends, so only
    regular files are ever opened for reading; the size is checked before any byte is read.
    """
    try:
        info = os.stat(path)
    except OSError as err:
        raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    _check_info(path, info, max_bytes)
    return info.st_size


def _check_info(path, info: os.stat_result, max_bytes: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ScanError(path, f"not a regular file ({_kind(info.st_mode)}); only regular files are read")
    limit = max_bytes_of(None) if max_bytes is None else max_bytes
    if info.st_size > limit:
        raise ScanError(path, f"file is {info.st_size / 2**20:.1f} MB, over the {limit / 2**20:g} MB "
                              "per-file limit (index.max_file_mb)")


@contextlib.contextmanager
def _open_checked(path: str | Path, max_bytes: int | None):
    """(stream, stat) of a file opened non-blocking and checked again on its descriptor.

    Non-blocking, so a FIFO swapped in after the first check cannot hang us; checked on the open
    descriptor, so what is read is what was checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    with os.fdopen(fd, "rb") as stream:
        try:
            info = os.fstat(stream.fileno())
        except OSError as err:
            raise ScanError(path, f"cannot read: {err.strerror or err}") from err
        _check_info(path, info, max_bytes)
        yield stream, info


def read_limited(path: str | Path, max_bytes: int | None = None, head: int | None = None) -> bytes:
    """The bytes of a regular file (its first ``head`` bytes when given), never more than the limit.

    The file is opened non-blocking (a FIFO swapped in after the first check cannot hang us),
    checked again on the open descriptor, and read with a bound, so a file that grows while
    it is read cannot exhaust memory either.
    """
    check_regular(path, max_bytes)
    limit = max_bytes_of(None) if max_bytes is None else max_bytes
    with _open_checked(path, max_bytes) as (stream, info):
        try:
            wanted = (limit + 1) if head is None else min(head, limit + 1)
            # Ask for the known size (plus one byte to see growth): read(n) allocates n bytes
            # up front, and 64 MB for a 5 MB frame costs more than reading it.
            data = stream.read(min(wanted, info.st_size + 1))
            if info.st_size < len(data) < wanted:  # the file grew since fstat: read on, to the bound
                data += stream.read(wanted - len(data))
        except OSError as err:
            raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    if len(data) > limit:
        raise ScanError(path, f"file grew past the {limit / 2**20:g} MB per-file limit while being read")
    return data


def read_ends(path: str | Path, max_bytes: int | None, nbytes: int) -> tuple[bytes, bytes, bool]:
    """(first ``nbytes``, last ``nbytes``, whether these two hold the whole file) of a regular file.

    The cheap look at a frame that is not rendered (index.validate: sampled): a header, its
    texture reference and how the file ends, without reading the megabytes in between.
    """
    size = check_regular(path, max_bytes)
    if size <= 2 * nbytes:
        data = read_limited(path, max_bytes)
        return data, data, True
    head = read_limited(path, max_bytes, head=nbytes)
    with _open_checked(path, max_bytes) as (stream, _):  # still a regular file, within the limit
        try:
            stream.seek(max(0, size - nbytes))
            tail = stream.read(nbytes)
        except OSError as err:
            raise ScanError(path, f"cannot read: {err.strerror or err}") from err
    return head, tail, False


def check_values(values: np.ndarray, path: str | Path, what: str) -> None:
    """Finite and within float32 range: meshes are stored as float32, where 1e39 becomes inf."""
    if values.size == 0:
        return
    if not np.isfinite(values).all():
        raise ScanError(path, f"non-finite (NaN or inf) {what}")
    largest = float(np.abs(values).max())
    if largest > FLOAT32_MAX:
        raise ScanError(path, f"{what} value {largest:g} does not fit in float32 (max {FLOAT32_MAX:.3g})")


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


def read_mesh(path: str | Path, *, require_texture: bool = False, max_bytes: int | None = None) -> Mesh:
    """Read a ``.wrl`` (VRML 2.0), ``.obj`` or Bosphorus ``.bnt`` scan as a triangle mesh.

    ``max_bytes`` is the per-file size limit (default DEFAULT_MAX_FILE_MB); extensions match
    in any case ('.WRL' copied from a DVD is a VRML file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".wrl":
        from smile_vlm.readers.vrml import read_vrml

        return read_vrml(path, require_texture=require_texture, max_bytes=max_bytes)
    if suffix == ".obj":
        from smile_vlm.readers.obj import read_obj

        return read_obj(path, require_texture=require_texture, max_bytes=max_bytes)
    if suffix == ".bnt":
        from smile_vlm.readers.bosphorus import bnt_to_mesh, read_bnt

        return bnt_to_mesh(read_bnt(path, max_bytes=max_bytes), path, require_texture=require_texture)
    raise ScanError(path, f"unsupported mesh extension {path.suffix!r} (expected {', '.join(MESH_EXTENSIONS)})")
