"""Number blocks of text scans converted in C: pandas' C tokenizer for float rows, numpy for the rest.

Float conversion bounds the reading of a 35k-vertex frame, and pandas' C engine converts a
block of ``x y z`` rows faster than ``np.fromstring``, and faster again when the numbers of a
row are split by single spaces (``single_spaced`` cuts the indentation first;
benchmarks/bench_vrml.py). It only takes the common layout (the same count of numbers on every line); anything
else, and anything it refuses, goes to the general numpy path, which decides. The C path is
never laxer than the general one (it refuses 'nan', quotes and empty fields that numpy would
read or report otherwise), so a file is accepted or rejected, with the same reason, whichever
path converts it (tests/test_readers_tokenizer.py, tests/test_readers_fastpath.py)."""

from __future__ import annotations

import csv
import io
import re
import warnings

import numpy as np

_COMMENT = re.compile(rb"#[^\n]*")
_ROW_BYTES = 256  # longer than any row of a few numbers
_NON_SPACE = re.compile(rb"\S")  # finds the first number without copying the block as strip() does
_SPACE, _COMMA, _LF, _CR = 32, 44, 10, 13
_PIECE_BYTES = 1 << 17  # single-spacing goes a piece at a time: its temporaries stay in the CPU cache


def float_rows(text: bytes, width: int, commas: bool = False, start: int = 0, end: int | None = None
               ) -> np.ndarray | None:
    """(n, width) float64 of the block ``text[start:end]`` (read in place, not copied) with
    exactly ``width`` numbers on every non-blank line, separated by whitespace (and by commas
    when ``commas``, as in VRML); None when the block has another layout or anything else in it."""
    import pandas as pd

    end = len(text) if end is None else end
    first = _NON_SPACE.search(text, start, end)
    if first is None:
        return None
    # pandas takes the column count from the first line: a block written on one line would
    # become a table of a column per number, so only a short first line of `width` numbers goes on
    row = first.start()
    line_end = text.find(b"\n", row, min(row + _ROW_BYTES, end))
    if line_end < 0 and end - row > _ROW_BYTES:
        return None
    first_line = text[row : line_end if line_end >= 0 else end]
    if len((first_line.replace(b",", b" ") if commas else first_line).split()) != width:
        return None
    spaced = single_spaced(text, commas, start, end)  # then one space is the only separator
    try:
        with warnings.catch_warnings():
            # a line longer than the first is an error; pandas would warn and drop numbers
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                io.BytesIO(spaced), sep=" ", header=None, dtype=np.float64, engine="c",
                na_filter=False, quoting=csv.QUOTE_NONE, skip_blank_lines=True, index_col=False,
            )
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning):
        return None
    if table.shape[1] != width:
        return None
    values = table.to_numpy(dtype=np.float64)
    # a short line leaves NaN in its missing columns; 'nan' in the text is refused above
    if values.size == 0 or np.isnan(values).any():
        return None
    return values


def single_spaced(text: bytes, commas: bool = False, start: int = 0, end: int | None = None) -> bytes:
    """The block ``text[start:end]`` with each run of spaces (and commas when ``commas``)
    between two numbers cut to one space, and the runs that indent or end a line dropped.

    pandas' C tokenizer splits on one space twice as fast as on whitespace runs, and the
    indentation of a BU file is a third of its float blocks. Only separators go, and only
    where a space or a line end still separates the same numbers, so the numbers and their
    lines stay what they were. Tabs stay (pandas reads a number with a tab beside it as
    numpy does, and two numbers split only by a tab as no number), and so does the first space
    of a run before a line end (an empty field, no number): such a block goes to the general
    path, slower but with the same numbers.
    """
    end = len(text) if end is None else end
    pieces = []
    while start < end:
        # a piece ends after a line end, where the next one can start as a block would
        cut = text.find(b"\n", start + _PIECE_BYTES, end) + 1 if end - start > _PIECE_BYTES else end
        cut = cut if cut > 0 else end
        pieces.append(_single_spaced_piece(text, commas, start, cut))
        start = cut
    spaced = b"".join(pieces)
    if commas and b"," in spaced:  # a comma that alone separates two numbers (rare) becomes a space
        spaced = spaced.replace(b",", b" ")
    return spaced


def _single_spaced_piece(text: bytes, commas: bool, start: int, end: int) -> bytes:
    chars = np.frombuffer(text, dtype=np.uint8, count=end - start, offset=start)
    gap = chars == _SPACE
    drop = np.empty_like(gap)  # first a scratch array, then the bytes to drop
    if commas:
        gap |= np.equal(chars, _COMMA, out=drop)
    line_end = chars == _LF
    if text.find(b"\r", start, end) >= 0:
        line_end |= np.equal(chars, _CR, out=drop)
    # drop a separator after a separator, a line end or the piece start, or before a line end
    # or the piece end; a run between two numbers on a line keeps its first byte
    drop[0] = True
    np.logical_or(gap[:-1], line_end[:-1], out=drop[1:])
    drop[:-1] |= line_end[1:]
    drop[-1] = True
    drop &= gap
    return chars[np.logical_not(drop, out=drop)].tobytes()


def general(block: bytes, dtype) -> np.ndarray:
    """Every number of a block in any layout, '#' comments and commas counting as whitespace.

    Raises ValueError when the block holds anything that is not a number of ``dtype``.
    """
    if b"#" in block:
        block = _COMMENT.sub(b" ", block)
    block = block.replace(b",", b" ")
    if _NON_SPACE.search(block) is None:
        return np.empty(0, dtype=dtype)  # np.fromstring turns a blank string into [-1.]
    return np.fromstring(block, dtype=dtype, sep=" ")
