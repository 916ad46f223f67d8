"""The one error type for bad input: it names the file and the reason."""

from __future__ import annotations

from pathlib import Path


class ScanError(ValueError):
    """A raw file that cannot be used. ``str(err)`` is ``"<path>: <reason>"``.

    Index and render steps catch it and write ``(path, reason)`` to a rejects table,
    so one broken scan never stops the rest of a dataset.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
