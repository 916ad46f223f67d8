"""BP4D-Spontaneous action-unit occurrence codes: ``AUCoding/AU_OCC/<SID>_<Tk>.csv``.

One CSV per coded sequence. The header row names the columns: column 0 is the frame number, every
other column one action unit, written as its number (``1, 2, 4, ...``, BP4D) or as ``AU01``
(BP4D+). Each row is one frame: its number, then per AU ``1`` (occurs), ``0`` (does not) or ``9``
(not coded). A frame's codes become the manifest's ``aus`` text (``occurrence_text``).

Bad files raise ``ScanError(path, reason)`` with the line: a read is bounded (``MAX_BYTES``), and a
cell that is no number, a code other than 0/1/9, a row of another width or a frame coded twice
stops that file only.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from smile_vlm.errors import ScanError

MAX_BYTES = 32 * 1024 * 1024  # a long BP4D task (~2,500 frames x ~100 columns) is well under 1 MB
NOT_CODED = 9
CODES = (0, 1, NOT_CODED)
NO_UNITS = "none"  # a frame coded with no AU present ('' means not coded at all)
FOLDER = Path("AUCoding") / "AU_OCC"
_AU_HEADER = re.compile(r"^(?:AU)?0*(\d+)$", re.IGNORECASE)


def occurrence_path(root: Path, subject: str, task: str) -> Path:
    return Path(root) / FOLDER / f"{subject}_{task}.csv"


def read_au_occ(path: str | Path) -> dict[int, dict[int, int]]:
    """{frame: {AU: 0 or 1}} of one AU_OCC file; AUs coded 9 (not coded) are left out of a frame."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise ScanError(path, f"cannot read: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise ScanError(path, f"larger than {MAX_BYTES // 2**20} MB: not an AU occurrence file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ScanError(path, f"not UTF-8 text (byte {err.start})") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise ScanError(path, "empty: no header row of action units")
    units = []
    for column, cell in enumerate(rows[0][1:], start=2):
        match = _AU_HEADER.match(cell.strip())
        if not match:
            raise ScanError(path, f"header column {column} is {cell.strip()!r}, not an action unit number")
        units.append(int(match.group(1)))
    if not units:
        raise ScanError(path, "the header names no action unit (column 0 is the frame number)")
    frames: dict[int, dict[int, int]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(units) + 1:
            raise ScanError(path, f"line {line} has {len(row)} cells, the header {len(units) + 1}")
        try:
            frame, *codes = (int(cell.strip()) for cell in row)
        except ValueError:
            raise ScanError(path, f"line {line}: a cell is not an integer") from None
        bad = [code for code in codes if code not in CODES]
        if bad or frame < 0:
            raise ScanError(path, f"line {line}: frame {frame} with code {bad[0] if bad else ''} "
                                  "(codes are 0, 1 and 9 = not coded; frames are numbers from 0)")
        if frame in frames:
            raise ScanError(path, f"line {line}: frame {frame} is coded twice")
        frames[frame] = {au: code for au, code in zip(units, codes) if code != NOT_CODED}
    return frames


def occurrence_text(codes: dict[int, int]) -> str:
    """The manifest's ``aus`` of one frame: the AUs that occur, ``AU1+AU12`` (4DME's spelling);
    ``none`` when AUs were coded and none occurs; '' when nothing was coded."""
    if not codes:
        return ""
    present = [f"AU{au}" for au, code in sorted(codes.items()) if code == 1]
    return "+".join(present) if present else NO_UNITS


def sequence_occurrences(root: Path, subject: str, task: str, found) -> dict[int, str]:
    """{frame: aus text} of one BP4D sequence from its AU_OCC file; {} when the release has none.
    A broken file is one reject of ``found`` (the index's accounting) and its frames stay uncoded."""
    path = occurrence_path(root, subject, task)
    if not path.is_file():
        return {}
    try:
        frames = read_au_occ(path)
    except ScanError as err:
        found.reject(path, err.reason)
        return {}
    found.use(path)
    return {frame: occurrence_text(codes) for frame, codes in frames.items()}
