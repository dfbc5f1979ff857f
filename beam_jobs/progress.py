"""Progress: per-process lines from the workers, and job-wide lines from Beam's metrics.

Each worker process has one tracker (its stages share it); a daemon thread logs the process's
counts, with its pid, every ``interval_s`` seconds through the ``grit_pipeline.build`` logger, so
lines keep coming while a slow stage (downloads, the detector) produces no result. Workers
configure that logger themselves (a worker process is not the launcher).

The same counts go to Beam's metrics (namespace ``grit``: ``read``, ``accepted``,
``rejected/STAGE/REASON``), which the launcher queries while it waits for a job on any runner
(``metrics_line``). Where those are not live (Spark's and Flink's job servers report them only
when the job ends), the launcher reads progress records instead: each worker process writes its
counts as ``_staging/RUN_ID/progress/HOST-PID.json`` when its tracker starts (so the launcher
knows a worker is up) and every ``interval_s`` seconds after; ``read_records`` sums them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

import fsspec

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


RECORDS_FOLDER = "progress"
RECORD_INTERVAL_S = 10.0  # records are written this often when progress lines are off (0)
_DETECTORS = 0  # detector copies this process loaded (ground.GroundFn counts them)


def records_folder(staging: str) -> str:
    """Where the workers of the run staged under ``staging`` write their progress records."""
    return f"{staging}/{RECORDS_FOLDER}"


def detector_loaded() -> None:
    global _DETECTORS
    _DETECTORS += 1


class Progress:
    def __init__(self, interval_s: float, records: str | None = None):
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.rows_in = 0
        self.accepted = 0
        self.rejected: Counter = Counter()  # by "STAGE/REASON"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._records = records
        self._thread: threading.Thread | None = None
        if records:
            self.write_record()  # the launcher's sign that a worker started
        if interval_s > 0 or records:
            self._thread = threading.Thread(target=self._report_forever, name="grit-progress", daemon=True)
            self._thread.start()

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

    def counts(self) -> dict[str, int]:
        """This process's counts under the metric names (``read``, ``accepted``, ``rejected/STAGE/REASON``)."""
        with self._lock:
            rejected = {f"rejected/{reason}": n for reason, n in self.rejected.items()}
            return {"read": self.rows_in, "accepted": self.accepted, **rejected}

    def write_record(self) -> None:
        """This process's counts as its progress record (best effort: progress never fails a bundle)."""
        fs, folder = fsspec.core.url_to_fs(self._records)
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "python": sys.executable,
            "package": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "detectors": _DETECTORS,
            "counts": self.counts(),
        }
        try:
            if fs.exists(folder.rsplit("/", 1)[0]):  # not once the run is committed (its folder is gone)
                from grit_pipeline.beam_jobs.output_dir import write_json

                write_json(fs, f"{folder}/{record['host']}-{record['pid']}.json", record)
        except Exception as err:  # a full disk or a flaky store must not end the bundle
            LOGGER.warning("progress record not written: %s", err)

    def _report_forever(self) -> None:
        period = self.interval_s if self.interval_s > 0 else RECORD_INTERVAL_S
        while not self._stop.wait(period):
            if self.interval_s > 0:
                LOGGER.info(self.line())
            if self._records:
                self.write_record()

    def stop(self) -> None:
        """End the reporting thread and wait for it: a record it was writing when asked to stop
        lands before this returns, never during the commit that removes the run's folder (a loaded
        machine once let it land there, and the commit failed on a folder no longer empty)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)


_TRACKER: Progress | None = None
_TRACKER_LOCK = threading.Lock()


def tracker(interval_s: float, records: str | None = None) -> Progress:
    """This process's tracker (created, and its reporting thread started, on first use).

    ``records``: the run's progress records folder (``records_folder``), where it writes its own.
    """
    global _TRACKER
    with _TRACKER_LOCK:
        if _TRACKER is None:
            configure_logging()
            _TRACKER = Progress(interval_s, records)
        return _TRACKER


def write_own_record() -> None:
    """Write this process's record now: the launcher calls it before reading the records, so a job
    that ran in this process and ended within one interval is counted with what it loaded."""
    with _TRACKER_LOCK:
        own = _TRACKER
    if own is not None and own._records:
        own.write_record()


def reset() -> None:
    """Stop this process's tracker and forget its counts (the launcher calls it around each run)."""
    global _TRACKER, _DETECTORS
    with _TRACKER_LOCK:
        if _TRACKER is not None:
            _TRACKER.stop()
        _TRACKER = None
        _DETECTORS = 0  # each run's GroundFn loads its own (a new Shared per pipeline)


def job_counts(metric_results) -> dict[str, int]:
    """Beam's counter results (``result.metrics().query()``) -> {name: value} for our namespace."""
    counts: Counter = Counter()
    for result in metric_results.get("counters", []):
        if result.key.metric.namespace == METRICS_NAMESPACE:
            value = result.committed if result.committed is not None else result.attempted
            counts[result.key.metric.name] += value or 0
    return dict(counts)


@dataclass(frozen=True)
class WorkerRecords:
    """The progress records of a run's workers: their summed counts and who wrote them."""

    counts: dict[str, int]
    workers: tuple[dict, ...]  # one record per worker process: host, pid, python, package, detectors

    @property
    def detectors(self) -> int:
        return sum(w.get("detectors", 0) for w in self.workers)


def read_records(folder: str) -> WorkerRecords:
    """Every worker's latest record in ``folder``, counts summed; unreadable ones (mid-write) skipped."""
    fs, root = fsspec.core.url_to_fs(folder)
    counts: Counter = Counter()
    workers = []
    try:
        paths = [p for p in fs.ls(root, detail=False) if p.endswith(".json") and "/." not in p]
    except FileNotFoundError:
        paths = []
    for path in sorted(paths):
        try:
            with fs.open(path, "r") as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            continue
        counts.update(record.get("counts", {}))
        workers.append({k: v for k, v in record.items() if k != "counts"})
    return WorkerRecords(dict(counts), tuple(workers))


def workers_line(records: WorkerRecords) -> str:
    hosts = {w["host"] for w in records.workers}
    return (
        f"workers: {len(records.workers)} SDK process(es) on {len(hosts)} host(s) reported, "
        f"{records.detectors} detector copies loaded"
    )


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
