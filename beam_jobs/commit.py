"""The commit: a finished run's files become the output's, and the manifest records them, exactly once.

The launcher commits after the job has finished (never a pipeline step, which a runner may retry):
the job's last step seals the list of what it read and wrote (``sealed.json``); ``commit`` turns
that list into a journal (``commit.json``: the renames, the deletes and the new manifest), writes
it, then carries it out. It is idempotent: a run the manifest already records is a no-op, and a
journal left by an interrupted commit is carried out again (done steps are skipped).

It refuses, committing nothing and leaving the inputs unfinished, when the run's rows do not add
up or when a file the job wrote is missing (e.g. deleted by another build's recovery): the
manifest never counts rows that are not on disk.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from grit_pipeline.beam_jobs.output_dir import (
    JOURNAL,
    MANIFEST,
    MANIFEST_FORMAT,
    PREFIXES,
    SEALED,
    STAGING,
    RunPlan,
    read_json,
    write_json,
)
from grit_pipeline.beam_jobs.records import BatchStats, FileRead, StagedFile, StageTime, run_batch_figures
from grit_pipeline.schemas import PROVENANCE_KEY, REJECTS_SCHEMA, write_table
from grit_pipeline.schemas.reader import read_parquet

ITEM_TYPES = {cls.__name__: cls for cls in (FileRead, StagedFile, StageTime, BatchStats)}


class CommitError(RuntimeError):
    """The run cannot be committed as it is; nothing was committed."""


def seal(plan: RunPlan, items: Iterable) -> None:
    """Record what the finished job read and wrote (the job's last step; rewriting it is harmless)."""
    fs, _ = fsspec.core.url_to_fs(plan.output)
    records = [{"type": type(i).__name__, **i.__dict__} for i in items]
    write_json(fs, f"{fs._strip_protocol(plan.staging)}/{SEALED}", {"items": records})


def sealed_items(plan: RunPlan) -> list | None:
    fs, _ = fsspec.core.url_to_fs(plan.output)
    sealed = read_json(fs, f"{fs._strip_protocol(plan.staging)}/{SEALED}")
    if sealed is None:
        return None
    return [ITEM_TYPES[r.pop("type")](**r) for r in sealed["items"]]


def _next_index(fs, folder: str, prefix: str) -> int:
    if not fs.exists(folder):
        return 0
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    numbers = [n[len(prefix) : -len(".parquet")] for n in names if n.startswith(prefix)]
    return max((int(n) for n in numbers if n.isdigit()), default=-1) + 1


def _strip_retried(fs, plan: RunPlan) -> tuple[list[tuple[str, str]], list[str], Counter]:
    """Replacements of the rejects files this retry run re-ran, without the retried rows."""
    moves, deletes, removed = [], [], Counter()
    for source in plan.retry_sources:
        table = read_parquet(fs.unstrip_protocol(source))
        retried = pc.is_in(table["reason"], value_set=pa.array(plan.transient_reasons))
        if not pc.any(retried).as_py():
            continue  # nothing of this file was retried: leave it as it is
        removed.update(table.filter(retried)["reason"].to_pylist())
        kept = table.filter(pc.invert(retried))
        if kept.num_rows:
            new = plan.new_file("rejects")
            provenance = json.loads((table.schema.metadata or {}).get(PROVENANCE_KEY, b"null"))
            write_table(kept, new, REJECTS_SCHEMA, provenance, atomic=False)
            if plan.publish_by_rename:
                moves.append((fs._strip_protocol(new), fs._strip_protocol(source)))
                continue
        deletes.append(fs._strip_protocol(source))
    return moves, deletes, removed


def apply_journal(fs, root: str, journal: Mapping) -> None:
    """Carry out a journal; safe to repeat after a crash half-way (done steps are skipped)."""
    for source, target in journal["moves"]:
        if fs.exists(source):
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(source, target)
        elif not fs.exists(target):
            raise CommitError(f"the commit journal moves {source} to {target}, but neither exists")
    for path in journal["deletes"]:
        if fs.exists(path):
            fs.rm(path)
    write_json(fs, f"{root}/{MANIFEST}", journal["manifest"])


def _run_counts(items: list) -> tuple[dict, dict]:
    """(the run's counts, the inputs it finished with their rows and sizes)."""
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
    inputs = {f.path: {"rows": f.rows, "size_bytes": f.size_bytes} for f in files}
    return counts, inputs


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


def _check_on_disk(fs, staged: list[StagedFile], plan: RunPlan) -> None:
    missing = [s.path for s in staged if not fs.exists(fs._strip_protocol(s.path))]
    if missing:
        raise CommitError(
            f"run {plan.run_id}: {len(missing)} file(s) it wrote are gone ({missing[0]} ...), perhaps "
            "deleted by another build's recovery; nothing committed, its inputs stay unfinished: "
            "run the build again"
        )


def _publish(fs, root: str, plan: RunPlan, staged: list[StagedFile]) -> tuple[list, dict]:
    """(renames, committed names per kind): numbered names by rename, or the files where they are."""
    published: dict[str, list[str]] = {"shards": [], "rejects": []}
    if not plan.publish_by_rename:
        for item in staged:
            published[item.kind].append(f"{item.kind}/{item.path.rsplit('/', 1)[-1]}")
        return [], published
    moves = []
    for kind in ("shards", "rejects"):
        index = _next_index(fs, f"{root}/{kind}", f"{PREFIXES[kind]}-")
        for item in (s for s in staged if s.kind == kind):
            name, index = f"{kind}/{PREFIXES[kind]}-{index:06d}.parquet", index + 1
            moves.append((fs._strip_protocol(item.path), f"{root}/{name}"))
            published[kind].append(name)
    return moves, published


def _timings(plan: RunPlan, counts: Mapping, items: list, finished_at: float) -> dict:
    """Wall time, and per stage the seconds its workers were busy (summed over workers) and rows done."""
    busy: Counter = Counter()
    rows: Counter = Counter()
    for item in items:
        if isinstance(item, StageTime):
            busy[item.stage] += item.seconds
            rows[item.stage] += item.rows
    wall_s = max(finished_at - plan.started_at, 1e-9)
    ground_s = busy.get("ground", 0.0)
    return {
        "wall_s": round(wall_s, 3),
        "rows_per_s": round(counts["input"] / wall_s, 3),
        "stage_busy_s": {k: round(v, 3) for k, v in sorted(busy.items())},
        "stage_rows": {k: v for k, v in sorted(rows.items()) if v},
        # Images through the detector per second of its busy time (one worker's view of its speed).
        "ground_images_per_s": round(rows["ground"] / ground_s, 3) if ground_s > 0 else None,
        "ground_batches": run_batch_figures(items),  # images, batches, mean batch, fill, shapes
    }


def _run_entry(plan: RunPlan, items: list, counts: dict, removed: Counter, published: dict) -> dict:
    finished_at = time.time()
    _, inputs = _run_counts(items)
    return {
        "run_id": plan.run_id,
        "kind": "retry-rejects" if plan.retry_sources else "build",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(plan.started_at)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished_at)),
        "timings": _timings(plan, counts, items, finished_at),
        "counts": counts,
        "retried": dict(sorted(removed.items())),
        "inputs": inputs if not plan.retry_sources else {},
        **published,
    }


def _check_adds_up(plan: RunPlan, counts: Mapping, removed: Counter) -> None:
    if counts["input"] != counts["accepted"] + counts["rejected"] or (
        plan.retry_sources and sum(removed.values()) != counts["input"]
    ):
        raise CommitError(f"run {plan.run_id} does not add up: {counts}, retried {sum(removed.values())}")


def _finish(fs, root: str, plan: RunPlan, journal: Mapping) -> None:
    apply_journal(fs, root, journal)
    fs.rm(fs._strip_protocol(plan.staging), recursive=True)
    if fs.exists(f"{root}/{STAGING}") and not fs.ls(f"{root}/{STAGING}"):
        fs.rm(f"{root}/{STAGING}", recursive=True)


def commit(plan: RunPlan, items: Iterable) -> dict:
    """Make the run's files the output's and update the manifest; returns the run's manifest entry.

    Idempotent (see the module docstring). Raises CommitError, committing nothing, when the rows
    do not add up (input != accepted + rejected) or a file the run wrote is missing.
    """
    fs, root = fsspec.core.url_to_fs(plan.output)
    manifest = read_json(fs, f"{root}/{MANIFEST}")
    done = next((r for r in (manifest or {}).get("runs", []) if r["run_id"] == plan.run_id), None)
    journal = read_json(fs, f"{fs._strip_protocol(plan.staging)}/{JOURNAL}")
    if done is not None and journal is None:
        return done  # committed before
    if journal is not None:  # interrupted half-way: carry out the same journal again
        _finish(fs, root, plan, journal)
        return journal["manifest"]["runs"][-1]
    items = list(items)
    counts, _ = _run_counts(items)
    staged = sorted((i for i in items if isinstance(i, StagedFile)), key=lambda s: (s.kind, s.path))
    _check_on_disk(fs, staged, plan)
    moves, deletes, removed = _strip_retried(fs, plan)
    _check_adds_up(plan, counts, removed)
    renames, published = _publish(fs, root, plan, staged)
    run = _run_entry(plan, items, counts, removed, published)
    manifest = manifest or {"format": MANIFEST_FORMAT, "runs": [], "finished_inputs": {}}
    manifest.update(
        config=plan.config,
        provenance=plan.provenance,
        beam_options=plan.beam_options,
        timings=run["timings"],
        counts=_merge_totals(manifest.get("counts"), counts, removed),
    )
    manifest["runs"].append(run)
    manifest["finished_inputs"].update(run["inputs"])
    journal = {"moves": [*moves, *renames], "deletes": deletes, "manifest": manifest}
    write_json(fs, f"{fs._strip_protocol(plan.staging)}/{JOURNAL}", journal)
    _finish(fs, root, plan, journal)
    return run
