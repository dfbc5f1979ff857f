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
from grit_pipeline.schemas.committed import FILES_KEY
from grit_pipeline.schemas.reader import read_parquet

ITEM_TYPES = {cls.__name__: cls for cls in (FileRead, StagedFile, StageTime, BatchStats)}


class CommitError(RuntimeError):
    """The run cannot be committed as it is; nothing was committed."""


SEAL_PARTS = 64  # the sealed list is written as this many part files, each from one group of items


def seal_part_name(part: int) -> str:
    return f"sealed-{part:03d}.json"


def seal_part(plan: RunPlan, part: int, items: Iterable) -> str:
    """One part of the sealed list (a pipeline step; rewriting it with the same items is harmless).

    Stage timings are summed per stage first: a job has one per bundle and stage, far too many to list.
    """
    fs, _ = fsspec.core.url_to_fs(plan.output)
    kept, busy, rows = [], Counter(), Counter()
    for item in items:
        if isinstance(item, StageTime):
            busy[item.stage] += item.seconds
            rows[item.stage] += item.rows
        else:
            kept.append(item)
    kept += [StageTime(stage, busy[stage], rows[stage]) for stage in sorted(busy)]
    records = [{"type": type(i).__name__, **i.__dict__} for i in kept]
    name = seal_part_name(part)
    write_json(fs, f"{fs._strip_protocol(plan.staging)}/{name}", {"items": records})
    return name


def seal(plan: RunPlan, parts: Iterable[str]) -> None:
    """Record that the job finished, naming the parts of its sealed list (the job's last step)."""
    fs, _ = fsspec.core.url_to_fs(plan.output)
    write_json(fs, f"{fs._strip_protocol(plan.staging)}/{SEALED}", {"parts": sorted(parts)})


def _records(value: Mapping) -> list:
    return [ITEM_TYPES[r.pop("type")](**r) for r in value["items"]]


def sealed_items(plan: RunPlan) -> list | None:
    """What the finished job read and wrote (its sealed parts, fetched in one batched read), or None."""
    fs, _ = fsspec.core.url_to_fs(plan.output)
    staging = fs._strip_protocol(plan.staging)
    sealed = read_json(fs, f"{staging}/{SEALED}")
    if sealed is None:
        return None
    if "items" in sealed:  # sealed by an earlier version: one list
        return _records(sealed)
    paths = [f"{staging}/{name}" for name in sealed["parts"]]
    contents = fs.cat(paths) if paths else {}
    by_path = {fs._strip_protocol(k): v for k, v in contents.items()}
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise CommitError(f"run {plan.run_id}: the sealed list names {missing[0]}, which is gone")
    return [item for p in paths for item in _records(json.loads(by_path[p]))]


def _next_index(fs, folder: str, prefix: str) -> int:
    if not fs.exists(folder):
        return 0
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    numbers = [n[len(prefix) : -len(".parquet")] for n in names if n.startswith(prefix)]
    return max((int(n) for n in numbers if n.isdigit()), default=-1) + 1


def _strip_retried(fs, plan: RunPlan) -> tuple[list[tuple[str, str]], list[str], Counter, list[str]]:
    """Replacements of the rejects files this retry run re-ran, without the retried rows:
    (renames, deletes, retried rows by reason, the names of replacements written in place)."""
    moves, deletes, removed, added = [], [], Counter(), []
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
            added.append(f"rejects/{new.rsplit('/', 1)[-1]}")
        deletes.append(fs._strip_protocol(source))
    return moves, deletes, removed, added


def _present(fs, paths: list[str]) -> list[str]:
    """Those of ``paths`` that exist, from one listing per folder (not one request per file)."""
    listed: dict[str, set[str]] = {}
    for folder in sorted({p.rsplit("/", 1)[0] for p in paths}):
        fs.invalidate_cache(folder)
        listed[folder] = set(fs.ls(folder, detail=False)) if fs.exists(folder) else set()
    return [p for p in paths if p in listed[p.rsplit("/", 1)[0]]]


def apply_journal(fs, root: str, journal: Mapping) -> None:
    """Carry out a journal; safe to repeat after a crash half-way (done steps are skipped)."""
    for source, target in journal["moves"]:
        if fs.exists(source):
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(source, target)
        elif not fs.exists(target):
            raise CommitError(f"the commit journal moves {source} to {target}, but neither exists")
    deletes = _present(fs, list(journal["deletes"]))
    if deletes:
        fs.rm(deletes)  # one batched request per thousand keys on object stores
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


def run_files_on_disk(fs, root: str, plan: RunPlan) -> set[str]:
    """Every file of the run on disk, from listings (one per folder, paged): its staging folder, or,
    where it writes in place, the names carrying its run id (retried bundles' leftovers included)."""
    fs.invalidate_cache()  # the workers wrote through other clients; a cached listing would be stale
    found: set[str] = set()
    staging = fs._strip_protocol(plan.staging)
    if fs.exists(staging):
        found.update(fs.find(staging))
    if not plan.publish_by_rename:
        for kind, prefix in PREFIXES.items():
            found.update(fs.glob(f"{root}/{kind}/{prefix}-{plan.run_id}-*.parquet"))
    return found


def _check_on_disk(fs, staged: list[StagedFile], plan: RunPlan, on_disk: set[str]) -> None:
    missing = [s.path for s in staged if fs._strip_protocol(s.path) not in on_disk]
    if missing:
        raise CommitError(
            f"run {plan.run_id}: {len(missing)} file(s) it wrote are gone ({missing[0]} ...), perhaps "
            "deleted by another build's recovery; nothing committed, its inputs stay unfinished: "
            "run the build again"
        )


def _leftovers(fs, root: str, staged: list[StagedFile], on_disk: set[str]) -> list[str]:
    """Files the run wrote in place that the sealed list does not name: attempts of bundles that
    failed and were retried (or whose output the runner discarded). No reader ever lists them
    (readers take the manifest's index); the commit deletes them."""
    named = {fs._strip_protocol(s.path) for s in staged}
    prefixes = tuple(f"{root}/{kind}/" for kind in PREFIXES)
    return sorted(p for p in on_disk if p.startswith(prefixes) and p not in named)


def _index(fs, root: str, manifest: Mapping | None) -> dict[str, list[str]]:
    """The committed file index before this commit; for a manifest written before the index existed,
    the files its folder holds now (the old readers' view), taken once."""
    if manifest is not None and isinstance(manifest.get(FILES_KEY), dict):
        return {kind: list(manifest[FILES_KEY].get(kind, [])) for kind in PREFIXES}
    index: dict[str, list[str]] = {kind: [] for kind in PREFIXES}
    if manifest is None:
        return index
    for kind, prefix in PREFIXES.items():
        found = fs.glob(f"{root}/{kind}/{prefix}-*.parquet")
        index[kind] = sorted(p[len(root) + 1 :] for p in found)
    return index


def _new_index(index: Mapping, published: Mapping, deletes: list[str], added: list[str], root: str) -> dict:
    gone = {p[len(root) + 1 :] for p in deletes}
    return {
        "shards": sorted({*index["shards"], *published["shards"]}),
        "rejects": sorted({*(n for n in index["rejects"] if n not in gone), *published["rejects"], *added}),
    }


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
    on_disk = run_files_on_disk(fs, root, plan)
    _check_on_disk(fs, staged, plan, on_disk)
    leftovers = [] if plan.publish_by_rename else _leftovers(fs, root, staged, on_disk)
    index = _index(fs, root, manifest)
    moves, deletes, removed, added = _strip_retried(fs, plan)
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
    manifest[FILES_KEY] = _new_index(index, published, deletes, added, root)
    manifest["runs"].append(run)
    manifest["finished_inputs"].update(run["inputs"])
    if leftovers:
        run["leftovers_deleted"] = len(leftovers)
    journal = {"moves": [*moves, *renames], "deletes": [*deletes, *leftovers], "manifest": manifest}
    write_json(fs, f"{fs._strip_protocol(plan.staging)}/{JOURNAL}", journal)
    _finish(fs, root, plan, journal)
    return run
