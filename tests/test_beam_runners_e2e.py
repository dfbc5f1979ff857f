"""The whole job on Beam's portable runners, end to end, against the local runner's result.

Marked ``runners`` (skipped by the default ``pytest`` run, run by ``.ci/run``): each starts real
processes, and Spark and Flink need Java 17 and the job servers ``make job-servers`` fetches.

- portable: ``--runner PortableRunner --job_endpoint embed`` (Beam's Python job service) with SDK
  workers in separate processes from ``python -m apache_beam.runners.worker.worker_pool_main``
  (``--environment_type EXTERNAL``), as Flink, Spark and Dataflow v2 run Python.
- Spark ``local[2]`` and a Flink ``[local]`` mini-cluster through their Java job servers.
- Clusters: a Spark standalone master with two workers and a Flink session cluster with two
  TaskManagers, every node its own JVM on 127.0.0.1 (``beam_jobs.clusters``), SDK workers started by
  Beam's boot program (``--environment_type PROCESS``), which fetches the staged artifacts and
  installs the project's wheel (``--extra_package``) into a fresh venv per SDK worker.

Each run must give the same keys, counts and shard contents as the local runner on the same input.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import clusters, run
from grit_pipeline.beam_jobs.job_servers import ensure_job_server
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.beam_jobs.progress import LOGGER
from grit_pipeline.schemas import list_shard_files, read_shard
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes
from grit_pipeline.testing.wheel import build_wheel

pytestmark = pytest.mark.runners

COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--rows-per-shard", "3"]
COMMON += ["--backoff", "0.05", "--progress-interval", "2"]
# One image per detector batch: a batch's images are padded to its largest, so boxes depend on which
# images share a batch, and that follows each runner's bundling (Spark's differs from the local one).
COMMON += ["--detector-batch-size", "1"]
# One torch thread everywhere: a reduction split over a different number of threads rounds
# differently (scores differed in the last float32 bit between the local runner's 2 threads and a
# cluster SDK process's share of 1), and each runner sizes threads from its own process count.
COMMON += ["--detector-threads", "1"]
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


def differences(expected: list[dict], got: list[dict]) -> str:
    """Which columns of which keys differ (the assertion's message)."""
    lines = []
    for want, have in zip(expected, got):
        lines += [
            f"{want['key']}.{c}: {want[c]!r:.200} != {have[c]!r:.200}" for c in want if want[c] != have[c]
        ]
    return "\n".join(lines[:12])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = Path(__file__).resolve().parents[1]
    return build_wheel(tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source"), root=root)


def sdk_workers(folder) -> list:
    """The SDK workers' folders the cluster's nodes made (boot-process.sh: one per SDK worker)."""
    return sorted(folder.glob("worker-*/sdk/sdk-*"))


@pytest.mark.parametrize("kind", ["spark", "flink"])
def test_cluster_with_beams_boot_program_matches_the_local_runner(
    kind, job_input, local_result, wheel, tmp_path, capsys
):
    ensure_job_server(kind)
    root, _ = job_input
    with clusters.running(kind, tmp_path / kind) as cluster:
        argv = [*cluster.beam_argv, *clusters.process_environment(), "--extra_package", str(wheel)]
        argv += ["--artifacts_dir", str(tmp_path / "artifacts")]  # the shared FS of a real cluster
        result, manifest = build_on(argv, root, f"{kind}-cluster", capsys)
    assert result[0] == local_result[0] and result[2] == local_result[2]
    assert result[1] == local_result[1], differences(local_result[1], result[1])
    assert manifest["beam_options"]["environment_type"] == "PROCESS"
    workers = sdk_workers(tmp_path / kind)
    assert workers, "no SDK worker was started through boot-process.sh"
    for folder in workers:  # boot installed the staged wheel into the worker's own fresh venv
        installed = list(folder.glob("venv/lib/python*/site-packages/grit_pipeline-*.dist-info"))
        assert installed, f"{folder}: the wheel is not installed in the SDK worker's venv"
    assert {f.parent.parent.name for f in workers} == {
        "worker-0",
        "worker-1",
    }  # both cluster workers ran SDKs


@pytest.fixture
def beamless_worker_pool(tmp_path):
    """Beam's worker pool, starting its SDK workers as a ``python`` that lacks apache_beam (a broken image)."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    port = free_port()
    env = {**os.environ, "PATH": str(bare / "bin") + os.pathsep + os.environ["PATH"]}
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield f"localhost:{port}"
    pool.terminate()
    pool.wait(timeout=30)


def wait_for_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def test_a_worker_that_never_starts_is_reported_in_one_line_and_the_launcher_exits_1(
    job_input, beamless_worker_pool, tmp_path
):
    """The real `grit build` process: Beam's embedded job service keeps the job's thread waiting for
    the worker after the cancel, so the process itself must exit (in-process, the test would hang)."""
    root, _ = job_input
    argv = ["--runner", "PortableRunner", "--job_endpoint", "embed"]
    argv += ["--environment_type", "EXTERNAL", "--environment_config", beamless_worker_pool]
    out = tmp_path / "never"
    command = [sys.executable, "-m", "grit_pipeline.cli", "build", "--input", str(root / "in.parquet")]
    command += ["--output", str(out), *COMMON, *argv, "--worker-start-timeout", "15"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "no SDK worker reported within 15 s" in line]
    assert len(lines) == 1, done.stderr[-2000:]
    assert load_manifest(str(out)) is None  # nothing committed


class GateServer:
    """An HTTP server on 127.0.0.1 whose one image answers only once ``gate`` is set (or after ``limit_s``)."""

    def __init__(self, body: bytes, limit_s: float):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.gate, self.opened_by_line = threading.Event(), None
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                gate.opened_by_line = gate.gate.wait(limit_s)  # False: the line never came in time
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/gate.jpg"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class JobLineSeen(logging.Handler):
    """Opens the gate when the launcher logs its job-wide progress line."""

    def __init__(self, gate: threading.Event):
        super().__init__()
        self._gate = gate

    def emit(self, record):
        if record.getMessage().startswith("job: "):
            self._gate.set()


def test_the_job_wide_progress_line_appears_while_the_job_runs(worker_pool, tmp_path, capsys):
    """One row's image is served only after the launcher printed ``job: ...``: the job cannot end
    before the line, and if the line only came at the end the gate times out (``opened_by_line`` False)."""
    server = GateServer(jpeg_bytes(120, 90, (30, 90, 200)), limit_s=240)
    handler = JobLineSeen(server.gate)
    LOGGER.addHandler(handler)
    try:
        pq.write_table(
            pa.table({"url": [server.url], "caption": ["a blue square on a grey wall"]}),
            tmp_path / "in.parquet",
        )
        argv = ["--runner", "PortableRunner", "--job_endpoint", "embed"]
        argv += ["--environment_type", "EXTERNAL", "--environment_config", worker_pool]
        argv += ["--timeout", "300", "--total-timeout", "300", "--progress-interval", "1"]
        status = run(
            ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *COMMON, *argv]
        )
    finally:
        LOGGER.removeHandler(handler)
        server.close()
    err = capsys.readouterr().err
    assert status == 0, err[-3000:]
    assert server.opened_by_line is True, "the progress line did not appear while the job ran"
    assert "grit build: workers: " in err  # the launcher read the workers' progress records
