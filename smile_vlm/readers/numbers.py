"""Number blocks of text scans converted in C: pandas' C tokenizer for float rows, numpy for the rest.

Float conversion bounds the reading of a 35k-vertex frame, and pandas' C engine converts a
block of ``x y z`` rows faster than ``np.fromstring`` (benchmarks/bench_vrml.py). It only
takes the common layout (the same count of numbers on every line); anything else, and
anything it refuses, goes to the general numpy path, which decides. The C path is never
laxer than the general one (it refuses 'nan', quotes and empty fields that numpy would read
or report otherwise), so a file is accepted or rejected, with the same reason, whichever
path converts it (tests/test_readers_tokenizer.py).
"""

from __future__ import annotations

import csv
import io
import re
import warnings

import numpy as np

_COMMENT = re.compile(rb"#[^\n]*")
_ROW_BYTES = 256  # longer than any row of a few numbers
_NON_SPACE = re.compile(rb"\S")  # finds the first number without copying the block as strip() does


def float_rows(block: bytes, width: int) -> np.ndarray | None:
    """(n, width) float64 of a block with exactly ``width`` numbers on every non-blank line,
    separated by whitespace; None when the block has another layout or anything else in it."""
    import pandas as pd

    first = _NON_SPACE.search(block)
    if first is None:
        return None
    # pandas takes the column count from the first line: a block written on one line would
    # become a table of a column per number, so only a short first line of `width` numbers goes on
    start = first.start()
    line_end = block.find(b"\n", start, start + _ROW_BYTES)
    if line_end < 0 and len(block) - start > _ROW_BYTES:
        return None
    if len(block[start : line_end if line_end >= 0 else len(block)].split()) != width:
        return None
    try:
        with warnings.catch_warnings():
            # a line longer than the first is an error; pandas would warn and drop numbers
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                io.BytesIO(block), sep=r"\s+", header=None, dtype=np.float64, engine="c",
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
