"""Periodic progress lines on the local runner: rows in, accepted, rejected by reason, rows per second.

One tracker per worker process (the stages of a process share it); each process logs its own
counts, with its pid, every ``interval_s`` seconds through the ``grit_pipeline.build`` logger.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter

LOGGER = logging.getLogger("grit_pipeline.build")


class Progress:
    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last_report = self.started
        self.rows_in = 0
        self.accepted = 0
        self.rejected: Counter = Counter()
        self._lock = threading.Lock()

    def read(self, rows: int = 1) -> None:
        with self._lock:
            self.rows_in += rows
        self.maybe_report()

    def accept(self, rows: int = 1) -> None:
        with self._lock:
            self.accepted += rows
        self.maybe_report()

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1
        self.maybe_report()

    def line(self) -> str:
        done = self.accepted + sum(self.rejected.values())
        rate = done / max(time.monotonic() - self.started, 1e-9)
        reasons = ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common(6))
        return (
            f"progress (pid {os.getpid()}): {self.rows_in} rows in, {done} done ({self.accepted} accepted, "
            f"{sum(self.rejected.values())} rejected{': ' + reasons if reasons else ''}), {rate:.1f} rows/s"
        )

    def maybe_report(self) -> None:
        now = time.monotonic()
        if self.interval_s > 0 and now - self.last_report >= self.interval_s:
            self.last_report = now
            LOGGER.info(self.line())


_TRACKER: Progress | None = None
_TRACKER_LOCK = threading.Lock()


def tracker(interval_s: float) -> Progress:
    """This process's tracker (created on first use)."""
    global _TRACKER
    with _TRACKER_LOCK:
        if _TRACKER is None:
            _TRACKER = Progress(interval_s)
        return _TRACKER
