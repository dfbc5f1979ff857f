"""The output folder: its layout, the run plan, and where a run's files are written before the commit.

Layout of OUTPUT::

    shards/shard-000000.parquet ...   accepted rows (schema v1), zero-padded, numbered across runs
    rejects/rejects-000000.parquet    every row that did not make it, with stage, reason, error
    manifest.json                     configuration, provenance, timings, counts; one entry per run
    _lock.json                        the build running into OUTPUT now (see ``lock``)
    _staging/RUN_ID/                  a run in progress: run.json (its plan), its staged files,
                                      sealed.json (what the finished job wrote), commit.json (journal)

Write once: each Parquet file's bytes are written once, straight under its final or staged name
(no temporary file). Where renames are cheap (the local file system, HDFS), workers write
``_staging/RUN_ID/KIND/UUID.parquet.staged`` and the commit renames each file once to its numbered
name. Where a "rename" is a copy (object stores, fsspec's memory file system), workers write the
final name ``KIND/PREFIX-RUN_ID-UUID.parquet`` and the commit renames nothing: the manifest lists
what is committed, and recovery deletes the files of a run that died before its commit (their
names carry the run id). See ``commit`` for the journaled commit and ``modes`` for recovery.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

import fsspec

MANIFEST = "manifest.json"
STAGING = "_staging"
RUN_FILE = "run.json"
SEALED = "sealed.json"
JOURNAL = "commit.json"
MANIFEST_FORMAT = "grit-pipeline/manifest/1"
PREFIXES = {"shards": "shard", "rejects": "rejects"}
# fsspec protocols whose ``mv`` is a real rename (the others copy the bytes, then delete).
CHEAP_RENAME_PROTOCOLS = frozenset({"file", "local", "hdfs", "arrow_hdfs", "webhdfs"})


class OutputExistsError(RuntimeError):
    """OUTPUT already holds a build and the mode says not to touch it."""


def renames_cheaply(output: str) -> bool:
    fs, _ = fsspec.core.url_to_fs(output)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool(CHEAP_RENAME_PROTOCOLS.intersection(protocols))


@dataclass(frozen=True)
class RunPlan:
    """What the workers and the commit need to know about the run (picklable, JSON-able)."""

    output: str
    run_id: str
    started_at: float
    config: dict
    provenance: dict
    beam_options: dict = field(default_factory=dict)
    retry_sources: tuple[str, ...] = ()  # rejects files whose transient rows this run retries
    transient_reasons: tuple[str, ...] = ()
    publish_by_rename: bool = True  # see the module docstring

    @property
    def staging(self) -> str:
        return f"{self.output}/{STAGING}/{self.run_id}"

    def new_file(self, kind: str) -> str:
        """A fresh path for one Parquet file of ``kind`` ("shards" or "rejects") of this run."""
        name = uuid.uuid4().hex
        if self.publish_by_rename:
            return f"{self.staging}/{kind}/{name}.parquet.staged"
        return f"{self.output}/{kind}/{PREFIXES[kind]}-{self.run_id}-{name}.parquet"

    def to_json(self) -> dict:
        return {**self.__dict__, "retry_sources": list(self.retry_sources)}

    @classmethod
    def from_json(cls, value: Mapping) -> RunPlan:
        return cls(
            **{
                **value,
                "retry_sources": tuple(value["retry_sources"]),
                "transient_reasons": tuple(value["transient_reasons"]),
            }
        )


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def read_json(fs, path: str) -> dict | None:
    try:
        with fs.open(path, "r") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def write_json(fs, path: str, value: Mapping) -> None:
    """Write to a hidden temporary name, then rename: readers see the old or the new file, whole."""
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open(tmp, "w") as handle:
            json.dump(value, handle, indent=2, sort_keys=True, default=str)
        fs.mv(tmp, path)
    except BaseException:  # a full disk: no half-written temporary is left behind
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise


# The temporary names of ``write_json`` and ``schemas.atomic_open``: ``.NAME.<32 hex digits>.tmp``.
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{32}\.tmp$")


def leftover_temporaries(fs, folder: str) -> list[str]:
    """The temporary files a killed writer left in ``folder`` (never a name any reader takes)."""
    if not fs.exists(folder):
        return []
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    return [f"{folder}/{n}" for n in names if TEMPORARY_NAME.match(n)]


def load_manifest(output: str) -> dict | None:
    fs, root = fsspec.core.url_to_fs(output)
    return read_json(fs, f"{root}/{MANIFEST}")


def start_run(plan: RunPlan) -> None:
    """Record the plan under the run's staging folder, so recovery can finish or undo the run."""
    fs, _ = fsspec.core.url_to_fs(plan.output)
    write_json(fs, f"{fs._strip_protocol(plan.staging)}/{RUN_FILE}", plan.to_json())
