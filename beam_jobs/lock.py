"""One build at a time per output folder: ``OUTPUT/_lock.json``, held by the launcher while its job runs.

The lock names its run, host and process, the runner and, once the runner accepted the job, the
job's id (Dataflow's, or the job service's with its endpoint). It carries a heartbeat the launcher
refreshes every ``HEARTBEAT_S`` seconds while it waits for the job.

Every change is conditional on the version the holder wrote (see ``conditional``): the lock is
created only if absent (gs:// ``ifGenerationMatch=0``, s3:// ``If-None-Match: *``, ``O_EXCL``
locally), so of two launchers starting at once exactly one gets it; a heartbeat or a release
replaces or deletes only the holder's own version, so a heartbeat racing a ``--break-lock``
takeover fails (and the old run then refuses to commit) instead of overwriting the new holder.

A lock whose launcher is gone (same host: its process id; another host: no heartbeat for
``STALE_AFTER_S``) is cleared only when no job of it may still be running: without a job id
(the job ran inside the launcher) when its process is provably dead; with one, when the runner
says the job has ended. A job whose state cannot be learnt (the job service is gone, no
credentials) stops the build with the job id and ``--break-lock`` as the way out. A launcher that
stops while its job is still running (Ctrl-C during a Dataflow job) leaves the lock in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field

import fsspec

from grit_pipeline.beam_jobs import conditional
from grit_pipeline.beam_jobs.conditional import PreconditionFailed
from grit_pipeline.beam_jobs.job_state import TERMINAL_STATES, job_of, job_state
from grit_pipeline.beam_jobs.progress import LOGGER

LOCK = "_lock.json"
HEARTBEAT_S = 30.0
# Ten missed heartbeats: a launcher that paused that long (suspended laptop) has lost its lock.
STALE_AFTER_S = 600.0


class OutputLockedError(RuntimeError):
    """Another build holds OUTPUT's lock (or a stale lock needs clearing)."""


@dataclass(frozen=True)
class LockHolder:
    run_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    runner: str | None = None
    job: dict = field(default_factory=dict)  # {"id": ..., "runner": ..., "endpoint"/"project"/"region"}

    @classmethod
    def from_json(cls, data: bytes) -> LockHolder:
        value = json.loads(data)
        known = {k: value[k] for k in cls.__dataclass_fields__ if k in value}
        return cls(**known)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class OutputLock:
    """``with OutputLock(output, run_id).held(break_lock): ...`` holds OUTPUT's lock for one run."""

    def __init__(self, output: str, run_id: str, runner: str | None = None):
        self.output, self.run_id, self.runner = output, run_id, runner
        self._fs, root = fsspec.core.url_to_fs(output)
        self.path = f"{root}/{LOCK}"
        self._stop = threading.Event()
        self._mine: LockHolder | None = None
        self._version: str | None = None
        self._lost = False
        self._result = None  # the runner's PipelineResult, once the job was submitted
        self._guard = threading.Lock()  # heartbeat thread vs record_job / release

    def holder(self) -> LockHolder | None:
        current = conditional.read(self._fs, self.path)
        return None if current is None else LockHolder.from_json(current.data)

    def acquire(self, break_lock: bool = False) -> None:
        now = time.time()
        mine = LockHolder(self.run_id, socket.gethostname(), os.getpid(), now, now, self.runner)
        for _ in range(3):  # a lock released or cleared between our create and our read: try again
            try:
                self._version = conditional.create(self._fs, self.path, mine.to_json())
            except FileExistsError:
                current = conditional.read(self._fs, self.path)
                if current is not None:
                    self._clear_or_refuse(current, break_lock)
                continue
            self._mine = mine
            self._start_heartbeat()
            return
        raise OutputLockedError(f"{self.output}: the lock changed hands while starting; try again")

    def _clear_or_refuse(self, current: conditional.Versioned, break_lock: bool) -> None:
        holder = LockHolder.from_json(current.data)
        why = "--break-lock" if break_lock else self._why_clearable(holder)
        if why is None:
            raise self._locked(holder)
        LOGGER.warning("removing the lock of run %s on %s (%s)", holder.run_id, self.output, why)
        with contextlib.suppress(PreconditionFailed):  # changed meanwhile: the caller reads it again
            conditional.delete(self._fs, self.path, current.version)

    def _why_clearable(self, holder: LockHolder) -> str | None:
        """Why the holder's lock may go (its launcher and its job are gone), or None."""
        here = holder.host == socket.gethostname()
        if here and _alive(holder.pid):
            return None
        if not here and time.time() - holder.heartbeat_at <= STALE_AFTER_S:
            return None
        if not holder.job:
            return f"its process {holder.pid} on this host is gone" if here else None
        state = job_state(holder.job)
        if state in TERMINAL_STATES:
            return f"its launcher is gone and its job {holder.job['id']} ended ({state})"
        raise self._job_may_run(holder, state)

    def _job_may_run(self, holder: LockHolder, state: str | None) -> OutputLockedError:
        job = holder.job
        known = f"is {state}" if state else "may still be running (its state cannot be learnt here)"
        return OutputLockedError(
            f"{self.output} is locked by run {holder.run_id}, whose {job.get('runner')} job {job['id']} "
            f"{known}; its files would be discarded by a new build: wait for it or cancel it, "
            f"then pass --break-lock (or delete {self.path})"
        )

    def _locked(self, holder: LockHolder) -> OutputLockedError:
        age_s = time.time() - holder.heartbeat_at
        where = f"run {holder.run_id}, pid {holder.pid} on {holder.host}, last heartbeat {age_s:.0f} s ago"
        if holder.job:
            where += f", {holder.job.get('runner')} job {holder.job['id']}"
        if age_s > STALE_AFTER_S:
            return OutputLockedError(
                f"{self.output} holds a stale lock ({where}): if no build is running into it, "
                f"pass --break-lock (or delete {self.path}); the next build then recovers the folder"
            )
        return OutputLockedError(
            f"another build is running into {self.output} ({where}); wait for it to finish or "
            "choose another --output"
        )

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                self.heartbeat()

        threading.Thread(target=beat, name="grit-lock-heartbeat", daemon=True).start()

    def _rewrite(self, holder: LockHolder) -> None:
        """Replace our version of the lock by ``holder``; a lock taken over meanwhile is lost, not overwritten."""
        with self._guard:
            if self._lost or self._version is None:
                return
            try:
                self._version = conditional.replace(self._fs, self.path, holder.to_json(), self._version)
                self._mine = holder
            except PreconditionFailed:
                self._lost = True
                self._stop.set()
                LOGGER.error("run %s lost the lock on %s (broken by another build)", self.run_id, self.output)

    def heartbeat(self) -> None:
        if self._mine is not None:
            self._rewrite(LockHolder(**{**asdict(self._mine), "heartbeat_at": time.time()}))

    def record_job(self, result, options=None) -> None:
        """Note the runner's job id in the lock (right after submission), so a later build can ask
        the runner whether the job still runs; a job that ran inside this process has none."""
        self._result = result
        job = job_of(result, options)
        if job and self._mine is not None:
            self._rewrite(LockHolder(**{**asdict(self._mine), "job": job, "heartbeat_at": time.time()}))

    def check(self) -> None:
        """Raise unless this run still holds the lock (the commit calls it first)."""
        holder = self.holder()
        if self._lost or holder is None or holder.run_id != self.run_id:
            raise OutputLockedError(
                f"run {self.run_id} lost the lock on {self.output} (now {holder}); nothing committed"
            )

    def _job_still_running(self) -> bool:
        if self._result is None or not (self._mine and self._mine.job):
            return False
        try:
            state = str(self._result.state).rsplit(".", 1)[-1]
        except Exception:  # cannot say: keep the lock, the next build asks the runner
            return True
        return state not in TERMINAL_STATES

    def release(self) -> None:
        self._stop.set()
        with self._guard:
            if self._lost or self._version is None:
                return
            if self._job_still_running():
                LOGGER.warning(
                    "the job %s of run %s may still be running: the lock on %s stays (the next build "
                    "checks the job's state, or pass --break-lock)",
                    self._mine.job["id"],
                    self.run_id,
                    self.output,
                )
                return
            try:
                conditional.delete(self._fs, self.path, self._version)
            except PreconditionFailed:
                LOGGER.warning(
                    "the lock of run %s on %s was broken by another build", self.run_id, self.output
                )
            self._version = None
