"""The output folder: its layout, the run modes, and the commit that makes a run's files visible.

Layout of OUTPUT::

    shards/shard-000000.parquet ...   accepted rows (schema v1), zero-padded, numbered across runs
    rejects/rejects-000000.parquet    every row that did not make it, with stage, reason, error
    manifest.json                     configuration, provenance, timings, counts; one entry per run
    _staging/RUN_ID/                  files of a run in progress (``*.parquet.staged``)

Crash safety: workers write only under ``_staging/RUN_ID`` with names no shard reader takes
(``.staged``). The commit, at the very end of a run, first writes a journal (``commit.json``: the
renames to do and the new manifest), then renames, writes the manifest and deletes the staging
folder. A killed run leaves either a staging folder without a journal (discarded by the next run:
its inputs are not finished, so they run again) or one with a journal (rolled forward by the next
run). Either way no row is lost or written twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from grit_pipeline.beam_jobs.records import FileRead, StagedFile, StageTime
from grit_pipeline.schemas import PROVENANCE_KEY, REJECTS_SCHEMA, write_table
from grit_pipeline.schemas.reader import read_parquet

MANIFEST = "manifest.json"
STAGING = "_staging"
JOURNAL = "commit.json"
MANIFEST_FORMAT = "grit-pipeline/manifest/1"


class OutputExistsError(RuntimeError):
    """OUTPUT already holds a build and the mode says not to touch it."""


@dataclass(frozen=True)
class RunPlan:
    """What the commit needs to know about the run (picklable: it travels to the committing worker)."""

    output: str
    run_id: str
    started_at: float
    config: dict
    provenance: dict
    beam_options: dict = field(default_factory=dict)
    retry_sources: tuple[str, ...] = ()  # rejects files whose transient rows this run retries
    transient_reasons: tuple[str, ...] = ()

    @property
    def staging(self) -> str:
        return f"{self.output}/{STAGING}/{self.run_id}"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def _read_json(fs, path: str) -> dict | None:
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as handle:
        return json.load(handle)


def _write_json(fs, path: str, value: Mapping) -> None:
    """Write to a hidden temporary name, then rename: readers see the old or the new file, whole."""
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open(tmp, "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True, default=str)
    fs.mv(tmp, path)


def load_manifest(output: str) -> dict | None:
    fs, root = fsspec.core.url_to_fs(output)
    return _read_json(fs, f"{root}/{MANIFEST}")


def recover(output: str) -> list[str]:
    """Finish runs that crashed after writing their journal, discard those that crashed before."""
    fs, root = fsspec.core.url_to_fs(output)
    notes = []
    if not fs.exists(f"{root}/{STAGING}"):
        return notes
    for run_dir in sorted(fs.ls(f"{root}/{STAGING}", detail=False)):
        journal = _read_json(fs, f"{run_dir}/{JOURNAL}")
        if journal is not None:
            _apply(fs, root, journal)
            notes.append(f"completed the commit of interrupted run {run_dir.rsplit('/', 1)[-1]}")
        else:
            notes.append(f"discarded the files of unfinished run {run_dir.rsplit('/', 1)[-1]}")
        fs.rm(run_dir, recursive=True)
    fs.rm(f"{root}/{STAGING}", recursive=True)
    return notes


def prepare(output: str, mode: str, inputs: Mapping[str, int | None]) -> tuple[list[str], list[str]]:
    """Apply the mode to OUTPUT; returns (inputs to run, inputs skipped as already finished).

    ``inputs`` maps each input file to its size in bytes (None when unknown).
    """
    fs, root = fsspec.core.url_to_fs(output)
    recover(output)
    manifest = _read_json(fs, f"{root}/{MANIFEST}")
    has_files = any(fs.exists(f"{root}/{d}") and fs.ls(f"{root}/{d}") for d in ("shards", "rejects"))
    if mode == "overwrite":
        for name in ("shards", "rejects", MANIFEST):
            if fs.exists(f"{root}/{name}"):
                fs.rm(f"{root}/{name}", recursive=True)
        return list(inputs), []
    if manifest is None and has_files:
        raise OutputExistsError(
            f"{output} holds shards or rejects but no {MANIFEST}: not a folder this tool finished; "
            "choose another --output or pass --mode overwrite"
        )
    if manifest is None:
        return list(inputs), []
    if mode == "refuse":
        raise OutputExistsError(
            f"{output} already holds a build ({MANIFEST}); pass --mode incremental to add only new "
            "inputs, --mode overwrite to replace it, or choose another --output"
        )
    finished = manifest.get("finished_inputs", {})
    todo, skipped = [], []
    for path, size in inputs.items():
        if path not in finished:
            todo.append(path)
        elif size is not None and finished[path].get("size_bytes") not in (None, size):
            raise OutputExistsError(
                f"input {path} changed since it was built ({finished[path]['size_bytes']} -> {size} bytes); "
                "rebuild with --mode overwrite or give the new version another name"
            )
        else:
            skipped.append(path)
    return todo, skipped


def _next_index(fs, folder: str, prefix: str) -> int:
    if not fs.exists(folder):
        return 0
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    numbers = [
        int(n[len(prefix) : -len(".parquet")])
        for n in names
        if n.startswith(prefix) and n.endswith(".parquet")
    ]
    return max(numbers, default=-1) + 1


def _strip_retried(fs, plan: RunPlan) -> tuple[list[tuple[str, str]], list[str], Counter]:
    """Staged replacements of the rejects files this retry run re-ran, without the retried rows."""
    moves, deletes, removed = [], [], Counter()
    for i, source in enumerate(plan.retry_sources):
        table = read_parquet(fs.unstrip_protocol(source))
        retried = pc.is_in(table["reason"], value_set=pa.array(plan.transient_reasons))
        if not pc.any(retried).as_py():
            continue  # nothing of this file was retried: leave it as it is
        removed.update(table.filter(retried)["reason"].to_pylist())
        kept = table.filter(pc.invert(retried))
        if kept.num_rows:
            staged = f"{plan.staging}/replacement-{i:06d}.parquet.staged"
            provenance = json.loads((table.schema.metadata or {}).get(PROVENANCE_KEY, b"null"))
            write_table(kept, staged, REJECTS_SCHEMA, provenance)
            moves.append((staged, fs._strip_protocol(source)))
        else:
            deletes.append(fs._strip_protocol(source))
    return moves, deletes, removed


def _apply(fs, root: str, journal: Mapping) -> None:
    """Carry out a journal; safe to repeat after a crash half-way (done steps are skipped)."""
    for source, target in journal["moves"]:
        if fs.exists(source):
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(source, target)
    for path in journal["deletes"]:
        if fs.exists(path):
            fs.rm(path)
    _write_json(fs, f"{root}/{MANIFEST}", journal["manifest"])


def _run_counts(items: list) -> tuple[dict, dict, dict]:
    files = [i for i in items if isinstance(i, FileRead)]
    staged = [i for i in items if isinstance(i, StagedFile)]
    by_reason: Counter = Counter()
    for item in staged:
        by_reason.update(item.by_reason)
    counts = {
        "input": sum(f.rows for f in files),
        "accepted": sum(s.rows for s in staged if s.kind == "shards"),
        "rejected": sum(s.rows for s in staged if s.kind == "rejects"),
        "by_reason": dict(sorted(by_reason.items())),
    }
    busy: Counter = Counter()
    for item in items:
        if isinstance(item, StageTime):
            busy[item.stage] += item.seconds
    inputs = {f.path: {"rows": f.rows, "size_bytes": f.size_bytes} for f in files}
    return counts, {k: round(v, 3) for k, v in sorted(busy.items())}, inputs


def _merge_totals(totals: Mapping | None, run: Mapping, removed: Counter) -> dict:
    """Totals over all runs; a retry run replaces the rejects it re-ran (``removed``) with its outcome."""
    totals = totals or {"input": 0, "accepted": 0, "rejected": 0, "by_reason": {}}
    by_reason = Counter(totals["by_reason"])
    by_reason.update(run["by_reason"])
    by_reason.subtract(removed)
    retried = sum(removed.values())
    return {
        "input": totals["input"] + run["input"] - retried,
        "accepted": totals["accepted"] + run["accepted"],
        "rejected": totals["rejected"] + run["rejected"] - retried,
        "by_reason": {k: v for k, v in sorted(by_reason.items()) if v},
    }


def commit(plan: RunPlan, items: Iterable) -> dict:
    """Make the run's staged files the output's, update the manifest; returns the run's entry.

    Raises RuntimeError when the run's rows do not add up (input != accepted + rejected):
    nothing is committed then, and the inputs stay unfinished.
    """
    items = list(items)
    fs, root = fsspec.core.url_to_fs(plan.output)
    counts, busy, inputs = _run_counts(items)
    moves, deletes, removed = _strip_retried(fs, plan)
    if counts["input"] != counts["accepted"] + counts["rejected"] or (
        plan.retry_sources and sum(removed.values()) != counts["input"]
    ):
        raise RuntimeError(f"run {plan.run_id} does not add up: {counts}, retried {sum(removed.values())}")
    staged = sorted((i for i in items if isinstance(i, StagedFile)), key=lambda s: (s.kind, s.path))
    next_shard = _next_index(fs, f"{root}/shards", "shard-")
    next_reject = _next_index(fs, f"{root}/rejects", "rejects-")
    published = {"shards": [], "rejects": []}
    for item in staged:
        if item.kind == "shards":
            name, next_shard = f"shards/shard-{next_shard:06d}.parquet", next_shard + 1
        else:
            name, next_reject = f"rejects/rejects-{next_reject:06d}.parquet", next_reject + 1
        moves.append((fs._strip_protocol(item.path), f"{root}/{name}"))
        published[item.kind].append(name)
    finished_at = time.time()
    wall_s = max(finished_at - plan.started_at, 1e-9)
    run = {
        "run_id": plan.run_id,
        "kind": "retry-rejects" if plan.retry_sources else "build",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.started_at)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished_at)),
        "timings": {
            "wall_s": round(wall_s, 3),
            "rows_per_s": round(counts["input"] / wall_s, 3),
            "stage_busy_s": busy,
        },
        "counts": counts,
        "retried": dict(sorted(removed.items())),
        "inputs": inputs if not plan.retry_sources else {},
        **published,
    }
    manifest = _read_json(fs, f"{root}/{MANIFEST}") or {
        "format": MANIFEST_FORMAT,
        "runs": [],
        "finished_inputs": {},
    }
    manifest.update(
        config=plan.config,
        provenance=plan.provenance,
        beam_options=plan.beam_options,
        timings=run["timings"],
        counts=_merge_totals(manifest.get("counts"), counts, removed),
    )
    manifest["runs"].append(run)
    manifest["finished_inputs"].update(run["inputs"])
    journal = {"moves": moves, "deletes": deletes, "manifest": manifest}
    _write_json(fs, f"{fs._strip_protocol(plan.staging)}/{JOURNAL}", journal)
    _apply(fs, root, journal)
    fs.rm(fs._strip_protocol(plan.staging), recursive=True)
    if not fs.ls(f"{root}/{STAGING}"):
        fs.rm(f"{root}/{STAGING}", recursive=True)
    return run
