"""The lock records the runner's job, and a re-run never discards the staging of a job that may still run.

The job is a real Beam job on a real job service: Beam's own Python job service
(``LocalJobServicer``, the one behind ``--runner PortableRunner --job_endpoint``) started on
127.0.0.1, running a pipeline whose one element waits until the test creates a gate file (a file,
not a threading.Event: the element's function is pickled into the SDK worker). The launcher that
submitted it is then "killed" by rewriting the lock's pid to a process that has exited, which is
what a Ctrl-C'd launcher leaves behind; the next ``grit build`` must ask the job service, not the
process table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.local_job_service import LocalJobServicer

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.job_state import job_state
from grit_pipeline.beam_jobs.lock import LOCK, OutputLock
from grit_pipeline.beam_jobs.output_dir import load_manifest

BUILD = ["--example", "--detector", "tiny-random"]


def _wait_for(gate: str):
    def hold(element):
        deadline = time.time() + 300
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)
        return element

    return hold


@pytest.fixture
def job_service():
    servicer = LocalJobServicer()
    port = servicer.start_grpc_server(0)
    try:
        yield f"localhost:{port}"
    finally:
        servicer.stop()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def as_if_the_launcher_died(out: Path) -> dict:
    holder = json.loads((out / LOCK).read_text())
    holder["pid"] = dead_pid()
    (out / LOCK).write_text(json.dumps(holder))
    return holder


def test_a_running_jobs_lock_is_kept_and_refused_then_cleared_once_the_job_is_done(
    tmp_path, job_service, capsys
):
    out, gate = tmp_path / "out", tmp_path / "gate"
    out.mkdir()
    options = PipelineOptions(
        ["--runner=PortableRunner", f"--job_endpoint={job_service}", "--environment_type=LOOPBACK"]
    )
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | beam.Create([1]) | beam.Map(_wait_for(str(gate)))

    lock = OutputLock(str(out), "r0", runner="PortableRunner")
    lock.acquire()
    result = pipeline.run()
    lock.record_job(result, options)
    recorded = json.loads((out / LOCK).read_text())
    assert recorded["runner"] == "PortableRunner" and recorded["run_id"] == "r0"
    assert recorded["job"]["id"] == result._job_id and recorded["job"]["endpoint"] == job_service
    assert job_state(recorded["job"]) == "RUNNING"

    lock.release()  # the launcher stops (Ctrl-C) while its job still runs: the lock stays
    assert (out / LOCK).exists()
    as_if_the_launcher_died(out)
    staged = out / "_staging" / "r0" / "shards" / "one.parquet.staged"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"the running job's file")

    capsys.readouterr()  # release()'s line that it keeps the lock (logged where the suite configured it)
    assert run([*BUILD, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("grit build: error: ")
    assert recorded["job"]["id"] in err and "is RUNNING" in err and "--break-lock" in err
    assert staged.read_bytes() == b"the running job's file"  # never discarded
    assert load_manifest(str(out)) is None

    gate.touch()
    result.wait_until_finish()
    assert job_state(recorded["job"]) == "DONE"
    assert run([*BUILD, "--output", str(out)]) == 0  # the runner says it ended: the lock is dead
    err = capsys.readouterr().err
    assert f"its job {recorded['job']['id']} ended (DONE)" in err
    assert load_manifest(str(out))["counts"]["input"] == 5 and not (out / LOCK).exists()


def test_a_job_whose_state_cannot_be_learnt_is_refused_with_its_id_and_break_lock(tmp_path, capsys):
    """The job service is gone (a closed port on 127.0.0.1): the state is unknown, so the build refuses."""
    out = tmp_path / "out"
    out.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{probe.getsockname()[1]}"  # closed once the block ends
    now = time.time()
    job = {"runner": "PortableRunner", "id": "job-gone-1", "endpoint": endpoint}
    holder = {
        "run_id": "r0",
        "host": socket.gethostname(),
        "pid": dead_pid(),
        "started_at": now,
        "heartbeat_at": now,
        "runner": "PortableRunner",
        "job": job,
    }
    (out / LOCK).write_text(json.dumps(holder))
    staged = out / "_staging" / "r0" / "run.json"
    staged.parent.mkdir(parents=True)
    staged.write_text("{}")
    capsys.readouterr()
    assert run([*BUILD, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "job-gone-1" in err and "--break-lock" in err
    assert "cannot be learnt" in err and staged.exists() and (out / LOCK).exists()
    assert run([*BUILD, "--output", str(out), "--break-lock"]) == 0  # the way out it names
    assert load_manifest(str(out))["counts"]["input"] == 5
