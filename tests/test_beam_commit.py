"""The commit under retries, crashes and concurrency; the lock; write-once; empty inputs; run timings."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from test_beam_output_dir import staged_run

from grit_pipeline.beam_jobs import commit as commit_module
from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.commit import CommitError, commit
from grit_pipeline.beam_jobs.lock import LOCK, STALE_AFTER_S
from grit_pipeline.beam_jobs.modes import prepare
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.schemas import list_shard_files
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--progress-interval", "0.2"]


def test_committing_the_same_run_twice_is_a_no_op(tmp_path):
    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a", "b"], ["c"])
    first = commit(plan, items)
    before = (tmp_path / "manifest.json").read_text()
    assert commit(plan, items) == first  # e.g. a retried step or a second launcher
    assert (tmp_path / "manifest.json").read_text() == before
    assert load_manifest(str(tmp_path))["counts"]["input"] == 3
    assert sorted(os.listdir(tmp_path / "rejects")) == ["rejects-000000.parquet"]


def test_a_commit_interrupted_half_way_is_finished_by_calling_it_again(tmp_path, monkeypatch):
    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a", "b"], ["c"])
    real_apply = commit_module.apply_journal

    def die_after_first_move(fs, root, journal):
        source, target = journal["moves"][0]
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(source, target)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(commit_module, "apply_journal", die_after_first_move)
    with pytest.raises(KeyboardInterrupt):
        commit(plan, items)
    monkeypatch.setattr(commit_module, "apply_journal", real_apply)
    assert load_manifest(str(tmp_path)) is None
    commit(plan, items)  # the retry carries out the same journal
    commit(plan, items)  # and a third call changes nothing
    manifest = load_manifest(str(tmp_path))
    assert len(manifest["runs"]) == 1
    assert manifest["counts"] == {"input": 3, "accepted": 2, "rejected": 1, "by_reason": {"http_404": 1}}
    assert len(list_shard_files(str(tmp_path / "shards"))) == 1 and not (tmp_path / "_staging").exists()


def test_a_missing_staged_file_fails_the_commit_and_leaves_the_inputs_unfinished(tmp_path):
    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a", "b"], ["c"])
    os.remove(items[1].path)  # another build's recovery deleted it
    with pytest.raises(CommitError, match="gone"):
        commit(plan, items)
    assert load_manifest(str(tmp_path)) is None
    assert not (tmp_path / "shards").exists() and not (tmp_path / "rejects").exists()
    assert prepare(str(tmp_path), "incremental", {"in.csv": 123}) == (["in.csv"], [])


def test_a_finished_but_uncommitted_run_is_committed_by_the_next_build(tmp_path):
    """The job sealed its list, then the launcher died: recovery commits rather than discards."""
    from grit_pipeline.beam_jobs.commit import seal, seal_part
    from grit_pipeline.beam_jobs.output_dir import start_run

    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a"], ["b"])
    start_run(plan)
    seal(plan, [seal_part(plan, 0, items)])
    assert prepare(str(tmp_path), "incremental", {"in.csv": 123}) == ([], ["in.csv"])
    assert load_manifest(str(tmp_path))["counts"]["input"] == 2


@pytest.fixture
def held_input(tmp_path):
    """An input whose downloads are held until the test sets the event: the build is still running
    when the test acts, however slowly the machine goes."""
    release = threading.Event()
    with LoopbackServer() as server:
        urls = [server.add(f"/{i}.jpg", Route(jpeg_bytes(60, 40), hold_until=release)) for i in range(6)]
        captions = [f"a red square number {i}" for i in range(6)]
        pq.write_table(pa.table({"url": urls, "caption": captions}), tmp_path / "in.parquet")
        try:
            yield tmp_path / "in.parquet", release
        finally:
            release.set()


def test_a_second_build_into_a_running_builds_output_is_refused(held_input, tmp_path, capsys):
    path, release = held_input
    out = tmp_path / "out"
    argv = ["--input", str(path), "--output", str(out), *COMMON, "--threads", "1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "grit_pipeline.beam_jobs.job", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in first.stderr:  # the first build holds the lock once it announces its run
        if "input file(s) ->" in line:
            break
    assert run([*argv, "--mode", "overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grit build: error: another build is running into") and "\n" not in err
    release.set()  # the first build may finish now
    first.stderr.read()
    assert first.wait(timeout=600) == 0
    manifest = load_manifest(str(out))
    assert manifest["counts"]["input"] == 6 and len(manifest["runs"]) == 1
    assert not (out / LOCK).exists()


def test_a_stale_lock_is_reported_with_how_to_clear_it(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    old = time.time() - STALE_AFTER_S - 60
    holder = {"run_id": "r0", "host": "another-host", "pid": 1, "started_at": old, "heartbeat_at": old}
    (out / LOCK).write_text(json.dumps(holder))
    argv = ["--example", "--output", str(out), "--detector", "tiny-random"]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "stale lock (run r0, pid 1 on another-host" in err and "--break-lock" in err and "\n" not in err
    assert run([*argv, "--break-lock"]) == 0
    assert load_manifest(str(out))["counts"]["input"] == 5 and not (out / LOCK).exists()


def test_a_dead_local_process_lock_is_recognised_and_removed(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    holder = {
        "run_id": "r0",
        "host": socket.gethostname(),
        "pid": dead.pid,
        "started_at": now,
        "heartbeat_at": now,
    }
    (out / LOCK).write_text(json.dumps(holder))
    assert run(["--example", "--output", str(out), "--detector", "tiny-random"]) == 0
    assert f"removing the lock of run r0 on {out} (its process {dead.pid} on this host is gone)" in (
        capsys.readouterr().err
    )


class CountingFileSystem(MemoryFileSystem):
    """fsspec's memory file system counting the bytes written per path, copies included.

    A "rename" on an object store is a copy of every byte; fsspec's memory file system renames the
    same way (copy, then delete), so this counts what a gs:// or s3:// build would upload.
    """

    protocol = ("counting",)
    written: dict[str, int] = {}  # noqa: RUF012  (one tally for every instance, as the store is)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("counting://"))

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        if "w" in mode or "x" in mode:
            write, name = handle.write, self._strip_protocol(path)

            def counted(data):
                CountingFileSystem.written[name] = CountingFileSystem.written.get(name, 0) + len(data)
                return write(data)

            handle.write = counted
        return handle

    def cp_file(self, path1, path2, **kwargs):
        super().cp_file(path1, path2, **kwargs)
        name = self._strip_protocol(path2)
        CountingFileSystem.written[name] = CountingFileSystem.written.get(name, 0) + self.size(path2)


fsspec.register_implementation("counting", CountingFileSystem, clobber=True)


def test_each_files_bytes_are_written_once(tmp_path):
    with LoopbackServer() as server:
        urls = [server.add(f"/{i}.jpg", Route(jpeg_bytes(80, 60, (40 * i, 90, 200)))) for i in range(4)]
        urls.append(server.url("/missing.jpg"))
        captions = [f"a blue square number {i}" for i in range(5)]
        pq.write_table(pa.table({"url": urls, "caption": captions}), tmp_path / "in.parquet")
        CountingFileSystem.written.clear()
        argv = ["--input", str(tmp_path / "in.parquet"), "--output", "counting://once", *COMMON]
        assert run([*argv, "--rows-per-shard", "2"]) == 0
    fs = fsspec.filesystem("counting")
    manifest = load_manifest("counting://once")
    assert manifest["counts"] == {"input": 5, "accepted": 4, "rejected": 1, "by_reason": {"http_404": 1}}
    final = {p: fs.size(p) for p in fs.find("/once") if p.endswith(".parquet")}
    assert len(final) == len(manifest["runs"][0]["shards"]) + 1 >= 3
    parquet_written = {p: n for p, n in CountingFileSystem.written.items() if ".parquet" in p}
    assert parquet_written == final  # every Parquet byte once, under its final name: no copy, no temp file
    fs.rm("/once", recursive=True)


def test_inputs_without_rows_commit_an_empty_run_and_an_empty_glob_is_an_error(tmp_path, capsys):
    (tmp_path / "header.csv").write_text("url,caption\n")
    out = tmp_path / "out"
    assert run(["--input", str(tmp_path / "header.csv"), "--output", str(out), *COMMON]) == 0
    manifest = load_manifest(str(out))
    assert manifest["counts"] == {"input": 0, "accepted": 0, "rejected": 0, "by_reason": {}}
    assert list(manifest["finished_inputs"]) == [str(tmp_path / "header.csv")]
    assert not (out / "_staging").exists() and not (out / LOCK).exists()
    capsys.readouterr()
    assert run(["--input", str(tmp_path / "none-*.csv"), "--output", str(tmp_path / "o2"), *COMMON]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grit build: error: no input files") and "\n" not in err


def test_the_manifest_records_seconds_per_stage_and_grounding_speed(tmp_path):
    out = tmp_path / "out"
    assert run(["--example", "--output", str(out), "--detector", "tiny-random"]) == 0
    timings = load_manifest(str(out))["runs"][0]["timings"]
    assert set(timings["stage_busy_s"]) >= {"read", "parse", "fetch", "ground", "assemble", "write"}
    assert timings["stage_rows"]["ground"] == 5
    busy = timings["stage_busy_s"]["ground"]  # rounded to the millisecond: tens of them here
    assert busy > 0.002
    assert 5 / (busy + 5e-4) - 1e-3 <= timings["ground_images_per_s"] <= 5 / (busy - 5e-4) + 1e-3


class FailingWritesFileSystem(MemoryFileSystem):
    """An in-memory file system on which every Parquet write fails, as a full or read-only disk would."""

    protocol = ("failingwrites",)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("failingwrites://"))

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode and ".parquet" in path:
            raise OSError(28, "No space left on device", path)
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("failingwrites", FailingWritesFileSystem, clobber=True)


def test_a_failed_job_exits_1_commits_nothing_and_releases_the_lock(tmp_path, capsys):
    argv = ["--example", "--output", "failingwrites://broken", "--detector", "tiny-random"]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert "the job failed, nothing was committed (its inputs stay unfinished)" in err
    assert "No space left on device" in err
    fs = fsspec.filesystem("failingwrites")
    assert load_manifest("failingwrites://broken") is None and not fs.exists(f"/broken/{LOCK}")
    fs.rm("/broken", recursive=True)
