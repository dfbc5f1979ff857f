"""The whole job on Beam's portable runners, end to end, against the local runner's result.

Marked ``runners`` (skipped by the default ``pytest`` run, run by ``.ci/run``): each starts real
processes, and Spark and Flink need Java 17 and the job servers ``make job-servers`` fetches.

- portable: ``--runner PortableRunner --job_endpoint embed`` (Beam's Python job service) with SDK
  workers in separate processes from ``python -m apache_beam.runners.worker.worker_pool_main``
  (``--environment_type EXTERNAL``), as Flink, Spark and Dataflow v2 run Python.
- Spark ``local[2]`` and a Flink ``[local]`` mini-cluster through their Java job servers.

Each run must give the same keys, counts and shard contents as the local runner on the same input.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_server import LoopbackServer, Route, jpeg_bytes

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.job_servers import ensure_job_server
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.schemas import list_shard_files, read_shard

pytestmark = pytest.mark.runners

COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--rows-per-shard", "3"]
COMMON += ["--backoff", "0.05", "--progress-interval", "2"]
# One image per detector batch: a batch's images are padded to its largest, so boxes depend on which
# images share a batch, and that follows each runner's bundling (Spark's differs from the local one).
COMMON += ["--detector-batch-size", "1"]
# Columns compared row by row (the rejects' error texts may name a worker's pid or thread).
SHARD_COLUMNS = ["key", "url", "caption", "width", "height", "noun_chunks", "ref_exps", "image", "sha256"]


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    """Eight rows: five photos, a 404, a duplicate URL and a caption without a noun chunk."""
    root = tmp_path_factory.mktemp("e2e")
    with LoopbackServer() as server:
        urls = [
            server.add(f"/{i}.jpg", Route(jpeg_bytes(120 + 8 * i, 90, (30 * i, 90, 200)))) for i in range(5)
        ]
        captions = [f"a blue square number {i} on a grey wall" for i in range(5)]
        urls += [server.url("/missing.jpg"), urls[0], urls[1]]
        captions += ["a red circle", "the same blue square again", "and then"]
        pq.write_table(pa.table({"url": urls, "caption": captions}), root / "in.parquet")
        yield root, server


def outcome(out) -> tuple[dict, list[dict], dict]:
    """(counts, shard rows sorted by key, rejects by key -> (stage, reason)) of a committed build."""
    manifest = load_manifest(str(out))
    shards = [row for p in list_shard_files(str(out / "shards")) for row in read_shard(p).to_pylist()]
    rows = sorted(({c: r[c] for c in SHARD_COLUMNS} for r in shards), key=lambda r: r["key"])
    rejects = {}
    for path in sorted((out / "rejects").glob("*.parquet")):
        for r in pq.read_table(path).to_pylist():
            rejects[r["key"]] = (r["stage"], r["reason"])
    return manifest["counts"], rows, rejects


@pytest.fixture(scope="module")
def local_result(job_input):
    root, _ = job_input
    assert run(["--input", str(root / "in.parquet"), "--output", str(root / "local"), *COMMON]) == 0
    result = outcome(root / "local")
    assert result[0]["input"] == 8 == result[0]["accepted"] + result[0]["rejected"]
    assert result[0]["accepted"] >= 3 and result[2]  # rows on both sides to compare
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def worker_pool():
    """Beam's SDK worker pool in its own process; it starts one worker process per job environment."""
    port = free_port()
    # The pool starts workers as `python`: the one of this environment, which has the package.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    yield f"localhost:{port}"
    pool.terminate()
    pool.wait(timeout=30)


def build_on(runner_argv: list[str], root, name: str, capsys):
    out = root / name
    status = run(["--input", str(root / "in.parquet"), "--output", str(out), *COMMON, *runner_argv])
    err = capsys.readouterr().err
    assert status == 0, err[-3000:]
    assert "grit build: job: 8 rows read" in err  # the launcher read the job's counters
    return outcome(out), load_manifest(str(out))


def test_portable_runner_with_external_workers_matches_the_local_runner(
    job_input, local_result, worker_pool, capsys
):
    root, _ = job_input
    argv = ["--runner", "PortableRunner", "--job_endpoint", "embed"]
    argv += ["--environment_type", "EXTERNAL", "--environment_config", worker_pool]
    result, manifest = build_on(argv, root, "portable", capsys)
    assert result == local_result
    assert manifest["beam_options"]["environment_type"] == "EXTERNAL"


def test_spark_local_matches_the_local_runner(job_input, local_result, capsys):
    ensure_job_server("spark")
    root, _ = job_input
    argv = ["--runner", "SparkRunner", "--spark_master_url", "local[2]"]
    result, _ = build_on(argv, root, "spark", capsys)
    assert result == local_result


def test_flink_local_matches_the_local_runner(job_input, local_result, capsys):
    ensure_job_server("flink")
    root, _ = job_input
    argv = ["--runner", "FlinkRunner", "--flink_master", "[local]"]
    result, _ = build_on(argv, root, "flink", capsys)
    assert result == local_result
