"""Before a run: recovery of runs that died, and the output modes (refuse, incremental, overwrite).

Both run only under OUTPUT's lock (see ``lock``), so no running job's files are touched. A run
found under ``_staging`` is rolled forward when it got far enough (a journal: the commit was
interrupted; a sealed list: the job finished but its launcher died before committing) and undone
otherwise (its files deleted; its inputs are not finished, so they run again). No row is lost or
written twice.
"""

from __future__ import annotations

from collections.abc import Mapping

import fsspec

from grit_pipeline.beam_jobs.commit import CommitError, apply_journal, commit, sealed_items
from grit_pipeline.beam_jobs.output_dir import (
    JOURNAL,
    MANIFEST,
    PREFIXES,
    RUN_FILE,
    STAGING,
    OutputExistsError,
    RunPlan,
    leftover_temporaries,
    read_json,
)


def _undo(fs, root: str, run_dir: str, run_id: str) -> None:
    """Delete a run's files: its staging folder and, when it wrote in place, its files by name."""
    fs.invalidate_cache()  # the dead run's workers wrote through other clients
    found = [
        p for kind, prefix in PREFIXES.items() for p in fs.glob(f"{root}/{kind}/{prefix}-{run_id}-*.parquet")
    ]
    if found:
        fs.rm(found)  # batched on object stores
    fs.rm(run_dir, recursive=True)


def _recover_run(fs, root: str, run_dir: str) -> str:
    run_id = run_dir.rsplit("/", 1)[-1]
    journal = read_json(fs, f"{run_dir}/{JOURNAL}")
    if journal is not None:  # the commit was interrupted: carry out the same journal
        apply_journal(fs, root, journal)
        fs.rm(run_dir, recursive=True)
        return f"completed the commit of interrupted run {run_id}"
    plan_json = read_json(fs, f"{run_dir}/{RUN_FILE}")
    plan = RunPlan.from_json(plan_json) if plan_json else None
    items = sealed_items(plan) if plan is not None else None
    if items is not None:  # the job finished, its launcher died before the commit
        try:
            commit(plan, items)
            return f"committed run {run_id}, which had finished without being committed"
        except CommitError as err:
            note = f"discarded the files of finished but uncommitted run {run_id} ({err})"
    else:
        note = f"discarded the files of unfinished run {run_id}"
    _undo(fs, root, run_dir, run_id)
    return note


def _remove_temporaries(fs, root: str) -> list[str]:
    """Delete the temporary files a killed commit left (``.manifest.json.<uuid>.tmp``, a shard's or a
    rejects file's): under the output's lock no writer is alive, and no reader takes those names."""
    found = [p for kind in ("", "/shards", "/rejects") for p in leftover_temporaries(fs, f"{root}{kind}")]
    for path in found:
        fs.rm(path)
    return [f"removed {len(found)} temporary file(s) left by a killed writer"] if found else []


def recover(output: str) -> list[str]:
    """Finish or undo every run left under OUTPUT/_staging; returns one note per run."""
    fs, root = fsspec.core.url_to_fs(output)
    notes = _remove_temporaries(fs, root)
    if not fs.exists(f"{root}/{STAGING}"):
        return notes
    notes += [_recover_run(fs, root, d) for d in sorted(fs.ls(f"{root}/{STAGING}", detail=False))]
    if fs.exists(f"{root}/{STAGING}"):
        fs.rm(f"{root}/{STAGING}", recursive=True)
    return notes


def _incremental(output: str, manifest: Mapping, inputs: Mapping[str, int | None]):
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


def prepare(output: str, mode: str, inputs: Mapping[str, int | None]) -> tuple[list[str], list[str]]:
    """Apply the mode to OUTPUT; returns (inputs to run, inputs skipped as already finished).

    ``inputs`` maps each input file to its size in bytes (None when unknown).
    """
    fs, root = fsspec.core.url_to_fs(output)
    recover(output)
    manifest = read_json(fs, f"{root}/{MANIFEST}")
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
    return _incremental(output, manifest, inputs)
