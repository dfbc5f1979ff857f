"""One build at a time per output folder: ``OUTPUT/_lock.json``, held by the launcher while its job runs.

The lock names its run, host and process and carries a heartbeat the launcher refreshes every
``HEARTBEAT_S`` seconds while it waits for the job. A lock is stale when its process is gone
(same host: checked with the process id) or, from another host, when its heartbeat is older than
``STALE_AFTER_S``. A stale lock of a process on this host is removed with a log line (the process
is provably dead); any other lock stops the build with one line saying who holds it and how to
clear it (``--break-lock``).

On the local file system the lock is created with an exclusive open, so two launchers cannot
both take it. Object stores have no exclusive create in fsspec: there the lock is written, read
back and compared, which narrows but does not close the window between two simultaneous starts.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import fsspec

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

    def __init__(self, output: str, run_id: str):
        self.output, self.run_id = output, run_id
        self._fs, root = fsspec.core.url_to_fs(output)
        self.path = f"{root}/{LOCK}"
        self._stop = threading.Event()

    def holder(self) -> LockHolder | None:
        try:
            with self._fs.open(self.path, "r") as handle:
                return LockHolder(**json.load(handle))
        except FileNotFoundError:
            return None

    def acquire(self, break_lock: bool = False) -> None:
        holder = self.holder()
        if holder is not None:
            self._clear_or_refuse(holder, break_lock)
        now = time.time()
        mine = LockHolder(self.run_id, socket.gethostname(), os.getpid(), now, now)
        self._fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        exclusive = "x" if self._fs.protocol in ("file", "local", ("file", "local")) else "w"
        try:
            with self._fs.open(self.path, exclusive) as handle:
                json.dump(asdict(mine), handle)
        except FileExistsError as err:
            raise self._locked(self.holder()) from err
        if self.holder() != mine:  # object stores: another launcher wrote after us
            raise self._locked(self.holder())
        self._start_heartbeat()

    def _clear_or_refuse(self, holder: LockHolder, break_lock: bool) -> None:
        here = holder.host == socket.gethostname()
        if break_lock or (here and not _alive(holder.pid)):
            why = "--break-lock" if break_lock else f"its process {holder.pid} on this host is gone"
            LOGGER.warning("removing the lock of run %s on %s (%s)", holder.run_id, self.output, why)
            self._fs.rm(self.path)
            return
        raise self._locked(holder)

    def _locked(self, holder: LockHolder | None) -> OutputLockedError:
        if holder is None:
            return OutputLockedError(f"{self.output} was locked and released while starting; try again")
        age_s = time.time() - holder.heartbeat_at
        where = f"run {holder.run_id}, pid {holder.pid} on {holder.host}, last heartbeat {age_s:.0f} s ago"
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

    def heartbeat(self) -> None:
        holder = self.holder()
        if holder is None or holder.run_id != self.run_id:
            return  # broken by someone else: the commit refuses then (see ``check``)
        with self._fs.open(self.path, "w") as handle:
            json.dump({**asdict(holder), "heartbeat_at": time.time()}, handle)

    def check(self) -> None:
        """Raise unless this run still holds the lock (the commit calls it first)."""
        holder = self.holder()
        if holder is None or holder.run_id != self.run_id:
            raise OutputLockedError(
                f"run {self.run_id} lost the lock on {self.output} (now {holder}); nothing committed"
            )

    def release(self) -> None:
        self._stop.set()
        holder = self.holder()
        if holder is not None and holder.run_id == self.run_id:
            self._fs.rm(self.path)
