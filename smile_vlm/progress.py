"""Progress lines of a long loop on the job's log (stderr, which a rule sends to its ``log:``).

A job that renders or trains for minutes says how far it is: the first step, then at least every
``INTERVAL_S`` seconds, and the last step. Plain logging, no terminal needed (a progress bar in
a log file would be carriage-return frames), and no torch: the render job imports it too.
"""

from __future__ import annotations

import logging
import time

INTERVAL_S = 15.0  # at most this long between two lines while steps keep finishing


class ProgressLog:
    """``step()`` after each unit of work logs "<what>: <done> of <total> <unit>" when it is the
    first or the last, or when ``interval_s`` has passed since the last line."""

    def __init__(self, log: logging.Logger, what: str, total: int, unit: str, interval_s: float = INTERVAL_S):
        self.log, self.what, self.total, self.unit = log, what, int(total), unit
        self.interval_s = interval_s
        self.done = 0
        self.started = self.last = time.perf_counter()

    def step(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        if self.done in (count, self.total) or now - self.last >= self.interval_s:
            self.last = now
            self.log.info("%s: %d of %d %s (%.0f s)", self.what, self.done, self.total, self.unit, now - self.started)
