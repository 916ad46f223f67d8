"""Bounded reads: only regular files are opened, within the per-file size limit, and values are
checked to fit the float32 meshes are stored in."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import numpy as np

from smile_vlm.errors import ScanError
from smile_vlm.settings import DEFAULT_INDEX

# Per-file size limit (config key index.max_file_mb, whose schema default this is). The
# largest real scans are a few MB (a BU-3DFE F3D .wrl about 3 MB, a ~35k-vertex BU-4DFE or BP4D
# frame 3-6 MB, a Bosphorus .bnt under 2 MB), so 64 MB leaves room for denser scanners while
# keeping a reader's peak memory on any single corrupt file well under 1 GB
# (benchmarks/bench_corrupt_memory.py).
DEFAULT_MAX_FILE_MB = DEFAULT_INDEX["max_file_mb"]
FLOAT32_MAX = float(np.finfo(np.float32).max)


def max_bytes_of(max_file_mb: float | None) -> int:
    return int(float(DEFAULT_MAX_FILE_MB if max_file_mb is None else max_file_mb) * 1024 * 1024)


def file_kind(mode: int) -> str:
    """What a stat mode is, in words, when it is no regular file (for the reason of a refusal)."""
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
        raise ScanError(path, f"not a regular file ({file_kind(info.st_mode)}); only regular files are read")
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
