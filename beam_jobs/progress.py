"""Progress: per-process lines from the workers, and job-wide lines from Beam's metrics.

Each worker process has one tracker (its stages share it); a daemon thread logs the process's
counts, with its pid, every ``interval_s`` seconds through the ``grit_pipeline.build`` logger, so
lines keep coming while a slow stage (downloads, the detector) produces no result. Workers
configure that logger themselves (a worker process is not the launcher).

The same counts go to Beam's metrics (namespace ``grit``: ``read``, ``accepted``,
``rejected/STAGE/REASON``), which the launcher queries while it waits for a job on any runner
(``metrics_line``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter

LOGGER = logging.getLogger("grit_pipeline.build")
METRICS_NAMESPACE = "grit"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (callers and pytest swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging() -> None:
    """Progress and summary lines to stderr (once per process; other handlers are left alone)."""
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("grit build: %(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False


def _count(name: str, rows: int) -> None:
    from apache_beam.metrics import Metrics  # a no-op outside a DoFn (the tracker's own tests)

    Metrics.counter(METRICS_NAMESPACE, name).inc(rows)


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
        _count("read", rows)
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
            configure_logging()
            _TRACKER = Progress(interval_s)
        return _TRACKER


def reset() -> None:
    """Stop this process's tracker and forget its counts (the launcher calls it around each run)."""
    global _TRACKER
    with _TRACKER_LOCK:
        if _TRACKER is not None:
            _TRACKER.stop()
        _TRACKER = None


def job_counts(metric_results) -> dict[str, int]:
    """Beam's counter results (``result.metrics().query()``) -> {name: value} for our namespace."""
    counts: Counter = Counter()
    for result in metric_results.get("counters", []):
        if result.key.metric.namespace == METRICS_NAMESPACE:
            value = result.committed if result.committed is not None else result.attempted
            counts[result.key.metric.name] += value or 0
    return dict(counts)


def metrics_line(counts: dict[str, int], elapsed_s: float) -> str:
    """One job-wide progress line: rows read, accepted, rejected by stage and reason, rows per second."""
    rejected = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("rejected/")}
    done = counts.get("accepted", 0) + sum(rejected.values())
    top = sorted(rejected.items(), key=lambda kv: -kv[1])[:6]
    reasons = ", ".join(f"{k} {v}" for k, v in top)
    return (
        f"job: {counts.get('read', 0)} rows read, {done} done ({counts.get('accepted', 0)} accepted, "
        f"{sum(rejected.values())} rejected{': ' + reasons if reasons else ''}), "
        f"{done / max(elapsed_s, 1e-9):.1f} rows/s"
    )
