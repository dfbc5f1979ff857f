"""Periodic progress lines on the local runner: rows in, accepted, rejected by reason, rows per second.

One tracker per worker process (the stages of a process share it); a daemon thread logs the
process's counts, with its pid, every ``interval_s`` seconds through the ``grit_pipeline.build``
logger, so lines keep coming while a slow stage (downloads, the detector) produces no result.
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
        self.rows_in = 0
        self.accepted = 0
        self.rejected: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if interval_s > 0:
            threading.Thread(target=self._report_forever, name="grit-progress", daemon=True).start()

    def read(self, rows: int = 1) -> None:
        with self._lock:
            self.rows_in += rows

    def accept(self, rows: int = 1) -> None:
        with self._lock:
            self.accepted += rows

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def line(self) -> str:
        with self._lock:
            rejected, top = sum(self.rejected.values()), self.rejected.most_common(6)
            done = self.accepted + rejected
            accepted, rows_in = self.accepted, self.rows_in
        rate = done / max(time.monotonic() - self.started, 1e-9)
        reasons = ", ".join(f"{reason} {n}" for reason, n in top)
        return (
            f"progress (pid {os.getpid()}): {rows_in} rows in, {done} done ({accepted} accepted, "
            f"{rejected} rejected{': ' + reasons if reasons else ''}), {rate:.1f} rows/s"
        )

    def _report_forever(self) -> None:
        while not self._stop.wait(self.interval_s):
            LOGGER.info(self.line())

    def stop(self) -> None:
        self._stop.set()


_TRACKER: Progress | None = None
_TRACKER_LOCK = threading.Lock()


def tracker(interval_s: float) -> Progress:
    """This process's tracker (created, and its reporting thread started, on first use)."""
    global _TRACKER
    with _TRACKER_LOCK:
        if _TRACKER is None:
            _TRACKER = Progress(interval_s)
        return _TRACKER


def reset() -> None:
    """Stop this process's tracker and forget its counts (the launcher calls it around each run)."""
    global _TRACKER
    with _TRACKER_LOCK:
        if _TRACKER is not None:
            _TRACKER.stop()
        _TRACKER = None
