"""Builds, re-runs, retries, races and every reader on real S3 and GCS emulators on 127.0.0.1.

Marked ``objstore`` (skipped by the default run; ``make test-objstore`` and ``.ci/run`` run it):
each store gets moto's S3 server or fake-gcs-server (see ``objstores``); the images come from the
suite's loopback HTTP server; the detector is the tiny random one. A few rows per build.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import fsspec
import objstores  # noqa: F401  (first: it configures gcsfs before gcsfs is imported)
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from objstores import EMULATORS

from grit_pipeline.beam_jobs import conditional, run
from grit_pipeline.beam_jobs import write as write_module
from grit_pipeline.beam_jobs.conditional import PreconditionFailed
from grit_pipeline.beam_jobs.lock import LOCK, OutputLock, OutputLockedError
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.cli import main
from grit_pipeline.schemas import list_shard_files, read_shard
from grit_pipeline.schemas.reader import read_parquet
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

pytestmark = [
    pytest.mark.objstore,
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

COMMON = [
    "--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--timeout", "0.5", "--retries", "1",
    "--backoff", "0.05", "--progress-interval", "0.5", "--rows-per-shard", "2",
]  # fmt: skip


@pytest.fixture(scope="module", params=sorted(EMULATORS))
def store(request):
    with EMULATORS[request.param]() as emulated:
        yield emulated


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as srv:
        yield srv


def write_input(url: str, rows: list[dict]) -> None:
    with fsspec.open(url, "wb") as handle:
        pq.write_table(pa.Table.from_pylist(rows), handle)


def good_rows(server, prefix: str, n: int, start: int = 0) -> list[dict]:
    return [
        {
            "key": f"{prefix}{i}",
            "url": server.add(f"/{prefix}{i}.jpg", Route(jpeg_bytes(64, 48, (30 * i % 255, 120, 200)))),
            "caption": f"a blue square number {i} on a grey table",
        }
        for i in range(start, start + n)
    ]


def committed_keys(output: str) -> tuple[list[str], list[str]]:
    """(accepted keys, rejected keys) as every reader sees them: the committed files only."""
    accepted = [k for p in list_shard_files(output) for k in read_shard(p, ["key"])["key"].to_pylist()]
    rejected = [
        k for p in list_shard_files(output, "rejects") for k in read_parquet(p, ["key"])["key"].to_pylist()
    ]
    return accepted, rejected


def timed_build(argv: list[str], what: str) -> int:
    started = time.perf_counter()
    status = run(argv)
    # Past pytest's capture (the tests read capsys): `pytest -m objstore -s` shows the wall times.
    print(f"objstore build {what}: {time.perf_counter() - started:.1f} s wall", file=sys.__stderr__)
    return status


def test_build_rerun_retry_and_every_tool_read_the_bucket(store, server, tmp_path, capsys):
    base = store.fresh("build")
    out = f"{base}/out"
    first = [
        *good_rows(server, f"{store.name}-a", 3),
        {
            "key": f"{store.name}-slow",
            "url": server.add(f"/{store.name}-slow.jpg", Route(jpeg_bytes(), delay_s=1.5)),
            "caption": "a square from a slow server",
        },
    ]
    write_input(f"{base}/in/a.parquet", first)
    assert (
        timed_build(["--input", f"{base}/in/a.parquet", "--output", out, *COMMON], f"{store.name} first") == 0
    )
    counts = load_manifest(out)["counts"]
    assert counts == {"input": 4, "accepted": 3, "rejected": 1, "by_reason": {"timeout": 1}}

    # Incremental: a new file; one of its keys an earlier run committed (read with column projection).
    second = [{**first[0], "caption": "the same key again"}, *good_rows(server, f"{store.name}-b", 1)]
    write_input(f"{base}/in/b.parquet", second)
    argv = ["--input", f"{base}/in/*.parquet", "--output", out, "--mode", "incremental", *COMMON]
    assert timed_build(argv, f"{store.name} incremental") == 0
    counts = load_manifest(out)["counts"]
    assert counts["input"] == 6 and counts["accepted"] == 4
    assert counts["by_reason"] == {"duplicate_key": 1, "timeout": 1}

    server.routes[f"/{store.name}-slow.jpg"] = Route(jpeg_bytes())  # the slow server recovered
    assert timed_build(["--retry-rejects", out, *COMMON], f"{store.name} retry-rejects") == 0
    counts = load_manifest(out)["counts"]
    assert counts == {"input": 6, "accepted": 5, "rejected": 1, "by_reason": {"duplicate_key": 1}}
    accepted, rejected = committed_keys(out)
    assert sorted(accepted) == sorted(r["key"] for r in [*first, second[1]])
    assert rejected == [first[0]["key"]]  # the incremental run's duplicate, once

    capsys.readouterr()
    assert main(["inspect", out, "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 5 and report["rejects"]["rows"] == 1
    assert main(["validate", out, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["head", out, "--n", "10"]) == 0
    assert sorted(json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()) == sorted(
        accepted
    )
    assert main(["show", out, "--out", str(tmp_path / "show"), "--quiet"]) == 0
    assert list((tmp_path / "show").glob("*.png"))
    converted = f"{base}/converted"
    assert main(["convert", out, "--to", "jsonl", "--out", converted, "--quiet"]) == 0
    fs = store.fs()
    lines = [line for path in fs.find(converted) for line in fs.cat(path).decode().splitlines()]
    assert sorted(json.loads(line)["key"] for line in lines) == sorted(accepted)
    train = ["train", "--data", out, "--out", str(tmp_path / "train"), "--preset", "tiny"]
    assert main([*train, "--max-steps", "2", "--batch-size", "2", "--warmup-steps", "1"]) == 0
    assert (tmp_path / "train" / "latest").exists()


# --- a write bundle that fails once and succeeds on retry --------------------------------------------

FIRST_ATTEMPT_MARKER: dict[str, str] = {}  # "path": the store URL whose exclusive creation marks it


def _first_attempt() -> bool:
    fs, path = fsspec.core.url_to_fs(FIRST_ATTEMPT_MARKER["path"])
    try:
        conditional.create(fs, path, b"the first attempt of a write bundle ran")
    except FileExistsError:
        return False
    return True


class FirstAttemptFailsWriteFn(write_module.WriteFn):
    """The shard writer, whose first flush in the job behaves as a bundle that failed and was retried.

    Beam's local FnApiRunner does not retry a failed bundle (it fails the job), so the retry is
    simulated honestly by what it leaves: the first attempt writes its Parquet file in full under a
    fresh name of the run (as a Dataflow or Spark attempt that failed after writing would), its
    output element is dropped (as a runner drops a failed bundle's output), then the same rows are
    written again as the retry does.
    """

    def _flush(self):
        if self._kind == "shards" and _first_attempt():
            rows = list(self._rows)
            super()._flush()  # the failed attempt's file; its StagedFile never reaches the sealed list
            self._rows = rows
        return super()._flush()


def test_a_retried_write_bundle_is_read_exactly_once_by_every_reader(
    store, server, tmp_path, monkeypatch, capsys, caplog
):
    base = store.fresh("retried")
    out = f"{base}/out"
    rows = good_rows(server, f"{store.name}-r", 5)
    write_input(f"{base}/in/a.parquet", rows)
    FIRST_ATTEMPT_MARKER["path"] = f"{base}/first-attempt-marker"
    monkeypatch.setattr(write_module, "WriteFn", FirstAttemptFailsWriteFn)
    with caplog.at_level(logging.INFO, logger="grit_pipeline.build"):
        argv = ["--input", f"{base}/in/a.parquet", "--output", out, *COMMON]
        assert timed_build(argv, f"{store.name} retried") == 0
    monkeypatch.undo()
    # The workers' progress records on the bucket: this process, one detector (not one per earlier run).
    assert "workers: 1 SDK process(es) on 1 host(s) reported, 1 detector copies loaded" in caplog.text
    manifest = load_manifest(out)
    (entry,) = manifest["runs"]
    assert entry["leftovers_deleted"] == 1  # the failed attempt's file existed and was deleted
    fs = store.fs()
    on_store = sorted(fs.glob(f"{out.split('://', 1)[1]}/shards/*.parquet"))
    assert len(on_store) == len(entry["shards"])
    keys = [r["key"] for r in rows]

    # A zombie attempt finishing after the commit (Dataflow can have them): a stray copy of a
    # committed shard under a name of the run. Readers never list the folder, so never see it.
    stray = f"{out}/shards/shard-{entry['run_id']}-zombie.parquet"
    fs.pipe_file(stray, fs.cat_file(list_shard_files(out)[0]))

    accepted, rejected = committed_keys(out)
    assert sorted(accepted) == sorted(keys) and rejected == []
    capsys.readouterr()
    assert main(["head", out, "--n", "100"]) == 0
    assert sorted(json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()) == sorted(keys)
    assert main(["validate", out, "--quiet"]) == 0  # duplicate keys across shards would be problems
    capsys.readouterr()
    assert main(["inspect", out, "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(keys)

    from grit_pipeline.model.data import ShardBatches, StreamConfig  # the trainer's own file list

    trainer_files = ShardBatches.__new__(ShardBatches)
    trainer_files.paths = list_shard_files(StreamConfig(data=out).data)
    assert stray.split("://", 1)[1] not in [p.split("://", 1)[1] for p in trainer_files.paths]

    # The next run's committed-key dedup: every key taken exactly once (one duplicate_key each).
    write_input(f"{base}/in/b.parquet", [{**r, "caption": "again"} for r in rows])
    argv = ["--input", f"{base}/in/b.parquet", "--output", out, "--mode", "incremental", *COMMON]
    assert run(argv) == 0
    accepted_after, rejected_after = committed_keys(out)
    assert sorted(accepted_after) == sorted(keys) and sorted(rejected_after) == sorted(keys)


# --- the lock --------------------------------------------------------------------------------------

RACER = """
import sys, time
import objstores  # noqa: F401  (gcsfs configured before import)
from grit_pipeline.beam_jobs.lock import OutputLock, OutputLockedError
out, start, rounds, me = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for r in range(rounds):
    time.sleep(max(0.0, start + 2.0 * r - time.time()))
    lock = OutputLock(f"{out}/round-{r}", f"{me}-{r}")
    try:
        lock.acquire()
        print(f"{r} won", flush=True)
        time.sleep(1.0)
        lock.release()
    except OutputLockedError:
        print(f"{r} refused", flush=True)
"""


def test_two_launchers_racing_for_the_lock_exactly_one_wins(store, tmp_path):
    import os
    import subprocess
    import sys

    base = store.fresh("race")
    rounds, start = 4, time.time() + 12.0  # both processes import first, then start each round together
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]),
    }
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, base, str(start), str(rounds), name],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("left", "right")
    ]
    outputs = [racer.communicate(timeout=120)[0].split("\n") for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    for r in range(rounds):
        said = sorted(line.split()[1] for lines in outputs for line in lines if line.startswith(f"{r} "))
        assert said == ["refused", "won"], (r, outputs)


def test_a_heartbeat_racing_a_takeover_does_not_overwrite_the_new_holder(store):
    out = store.fresh("takeover")
    old, new = OutputLock(out, "old"), OutputLock(out, "new")
    old.acquire()
    new.acquire(break_lock=True)  # the operator took the lock over
    old.heartbeat()  # replaces only its own version: fails, the old run has lost the lock
    assert new.holder().run_id == "new"
    with pytest.raises(OutputLockedError, match="lost the lock"):
        old.check()
    old.release()  # must not delete the new holder's lock
    assert new.holder().run_id == "new"
    new.heartbeat()
    new.check()
    new.release()
    assert new.holder() is None


def test_conditional_writes_hold_on_the_store(store):
    fs = store.fs()
    path = f"{store.fresh('cond').split('://', 1)[1]}/{LOCK}"
    first = conditional.create(fs, path, b"1")
    with pytest.raises(FileExistsError):
        conditional.create(fs, path, b"2")
    assert conditional.read(fs, path) == conditional.Versioned(b"1", first)
    second = conditional.replace(fs, path, b"3", first)
    with pytest.raises(PreconditionFailed):
        conditional.replace(fs, path, b"4", first)  # a stale version
    assert conditional.read(fs, path).data == b"3"
    if store.name == "s3":  # moto checks If-Match on DeleteObject
        with pytest.raises(PreconditionFailed):
            conditional.delete(fs, path, first)
    # fake-gcs-server ignores ifGenerationMatch on DELETE (it deletes whatever the generation; real
    # GCS answers 412): the stale delete is tested on S3 only, the current one on both.
    conditional.delete(fs, path, second)
    assert conditional.read(fs, path) is None
