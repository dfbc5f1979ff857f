"""Crash safety and run modes of the output folder: staged files, the journaled commit, recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import commit as commit_module
from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.commit import CommitError, commit
from grit_pipeline.beam_jobs.modes import prepare, recover
from grit_pipeline.beam_jobs.output_dir import OutputExistsError, RunPlan, load_manifest
from grit_pipeline.beam_jobs.records import FileRead, StagedFile, StageTime
from grit_pipeline.schemas import REJECTS_SCHEMA, SHARD_SCHEMA, list_shard_files, reject_row, write_table
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes


def shard(key: str) -> dict:
    return {"key": key, "url": f"http://x/{key}.jpg", "caption": "a red square"}


def staged_run(
    out, run_id: str, input_path: str, accepted: list[str], rejected: list[str]
) -> tuple[RunPlan, list]:
    """What a run's workers leave behind: staged shard and rejects files plus bookkeeping records."""
    plan = RunPlan(str(out), run_id, time.time(), {"mode": "test"}, {"detector": "none"})
    shard_path = f"{plan.staging}/shards/a.parquet.staged"
    write_table([shard(k) for k in accepted], shard_path, SHARD_SCHEMA)
    reject_path = f"{plan.staging}/rejects/b.parquet.staged"
    write_table(
        [reject_row(k, None, "x", "fetch", "http_404") for k in rejected], reject_path, REJECTS_SCHEMA
    )
    items = [
        FileRead(input_path, len(accepted) + len(rejected), 123),
        StagedFile("shards", shard_path, len(accepted)),
        StagedFile("rejects", reject_path, len(rejected), {"http_404": len(rejected)}),
        StageTime("fetch", 0.5),
    ]
    return plan, items


def test_commit_publishes_numbered_files_and_the_manifest(tmp_path):
    plan, items = staged_run(tmp_path, "r1", "in-1.csv", ["a", "b"], ["c"])
    assert list_shard_files(str(tmp_path)) == []  # staged files are invisible to shard readers
    run = commit(plan, items)
    assert run["shards"] == ["shards/shard-000000.parquet"] and run["rejects"] == [
        "rejects/rejects-000000.parquet"
    ]
    manifest = load_manifest(str(tmp_path))
    assert manifest["counts"] == {"input": 3, "accepted": 2, "rejected": 1, "by_reason": {"http_404": 1}}
    assert manifest["finished_inputs"] == {"in-1.csv": {"rows": 3, "size_bytes": 123}}
    assert not (tmp_path / "_staging").exists()
    plan, items = staged_run(tmp_path, "r2", "in-2.csv", ["d"], [])
    commit(plan, items)
    assert sorted(os.listdir(tmp_path / "shards")) == ["shard-000000.parquet", "shard-000001.parquet"]
    assert load_manifest(str(tmp_path))["counts"]["input"] == 4


def test_a_run_that_does_not_add_up_commits_nothing(tmp_path):
    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a"], [])
    items[0] = FileRead("in.csv", 2, 123)  # one row read was never written anywhere
    with pytest.raises(CommitError, match="does not add up"):
        commit(plan, items)
    assert load_manifest(str(tmp_path)) is None and not (tmp_path / "shards").exists()


def test_crash_before_the_journal_is_discarded(tmp_path):
    staged_run(tmp_path, "r1", "in.csv", ["a"], [])  # workers wrote, the commit never started
    assert prepare(str(tmp_path), "refuse", {"in.csv": 123}) == (["in.csv"], [])
    assert not (tmp_path / "_staging").exists() and list_shard_files(str(tmp_path)) == []


def test_crash_during_the_commit_is_rolled_forward(tmp_path, monkeypatch):
    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a", "b"], ["c"])
    calls = []

    def crash_after_first_move(fs, root, journal):
        # Do the first rename only, then die, as a killed process would.
        source, target = journal["moves"][0]
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(source, target)
        calls.append(target)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(commit_module, "apply_journal", crash_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        commit(plan, items)
    monkeypatch.undo()
    assert load_manifest(str(tmp_path)) is None and len(calls) == 1
    assert recover(str(tmp_path)) == ["completed the commit of interrupted run r1"]
    manifest = load_manifest(str(tmp_path))
    assert manifest["counts"]["input"] == 3 == manifest["counts"]["accepted"] + manifest["counts"]["rejected"]
    assert len(list_shard_files(str(tmp_path / "shards"))) == 1
    assert prepare(str(tmp_path), "incremental", {"in.csv": 123}) == ([], ["in.csv"])
    with pytest.raises(OutputExistsError, match="changed"):
        prepare(str(tmp_path), "incremental", {"in.csv": 999})


def test_folder_with_foreign_shards_is_not_touched(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "x.parquet").write_bytes(b"")
    with pytest.raises(OutputExistsError, match=r"no manifest\.json"):
        prepare(str(tmp_path), "incremental", {"in.csv": 1})


def test_killed_job_leaves_no_shard_and_the_rerun_completes(tmp_path):
    """A real `grit build` process killed mid-run, then run again into the same folder."""
    release = threading.Event()  # downloads wait until the kill: the job cannot finish before it
    with LoopbackServer() as server:
        urls = [server.add(f"/{i}.jpg", Route(jpeg_bytes(60, 40), hold_until=release)) for i in range(12)]
        pq.write_table(
            pa.table({"url": urls, "caption": [f"a red square number {i}" for i in range(12)]}),
            tmp_path / "in.parquet",
        )
        argv = [sys.executable, "-m", "grit_pipeline.beam_jobs.job", "--input", str(tmp_path / "in.parquet")]
        argv += [
            "--output",
            str(tmp_path / "out"),
            "--detector",
            "tiny-random",
            "--allow-network",
            "127.0.0.1/32",
        ]
        argv += ["--threads", "1", "--progress-interval", "0.1"]
        process = subprocess.Popen(
            argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        for line in process.stderr:  # wait until rows are flowing, then kill it
            if "progress (pid" in line:
                break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        release.set()
        assert load_manifest(str(tmp_path / "out")) is None
        if (tmp_path / "out").exists():  # staged files, if any, are not shards to a reader
            assert list_shard_files(str(tmp_path / "out")) == []
        assert run([*argv[3:-4], "--threads", "8"]) == 0  # the same command again, in this process
    manifest = load_manifest(str(tmp_path / "out"))
    assert (
        manifest["counts"]["input"] == 12 == manifest["counts"]["accepted"] + manifest["counts"]["rejected"]
    )
    assert len(manifest["runs"]) == 1
    keys = [
        k
        for p in list_shard_files(str(tmp_path / "out"))
        for k in pq.read_table(p, columns=["key"])["key"].to_pylist()
    ]
    assert len(keys) == len(set(keys)) == manifest["counts"]["accepted"]
