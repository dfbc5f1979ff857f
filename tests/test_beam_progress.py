"""Progress: worker processes log their own lines; the launcher's job-wide line from Beam's counters."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from grit_pipeline.beam_jobs.progress import metrics_line


def test_metrics_line_counts_rows_by_stage_and_reason():
    counts = {"read": 10, "accepted": 6, "rejected/fetch/http_404": 3, "rejected/parse/no_noun_chunk": 1}
    line = metrics_line(counts, elapsed_s=2.0)
    assert line == (
        "job: 10 rows read, 10 done (6 accepted, 4 rejected: fetch/http_404 3, parse/no_noun_chunk 1), 5.0 rows/s"
    )


def test_worker_processes_log_progress_of_their_own(tmp_path):
    """With multi_processing the stages run in worker processes: their lines carry their own pids."""
    argv = [sys.executable, "-m", "grit_pipeline.beam_jobs.job", "--example", "--output", str(tmp_path / "o")]
    argv += ["--detector", "tiny-random", "--progress-interval", "0.2"]
    argv += ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    launcher = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    _, err = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, err[-3000:]
    pids = {int(p) for p in re.findall(r"grit build: progress \(pid (\d+)\)", err)}
    assert pids and launcher.pid not in pids  # the lines come from the workers
    assert "grit build: job: 5 rows read, 5 done (5 accepted, 0 rejected)" in err


def test_a_job_shorter_than_one_interval_counts_the_detector_it_loaded(tmp_path, capsys):
    """The example ends within the default 10 s interval: the launcher writes its own record before
    reading them, so the workers line counts the detector this process loaded (it said 0 before)."""
    from grit_pipeline.beam_jobs import run

    assert run(["--example", "--output", str(tmp_path / "o"), "--detector", "tiny-random"]) == 0
    err = capsys.readouterr().err
    assert "workers: 1 SDK process(es) on 1 host(s) reported, 1 detector copies loaded" in err, err[-2000:]


def test_a_record_being_written_when_the_tracker_stops_lands_before_stop_returns(tmp_path, monkeypatch):
    """Under load the reporting thread was still writing a record while the commit removed the run's
    folder (`Directory not empty`, the build failed): stop() now waits for that write."""
    import threading

    from grit_pipeline.beam_jobs.progress import Progress

    writing, release, written = threading.Event(), threading.Event(), []

    def held_write(self) -> None:
        writing.set()
        release.wait(timeout=60)
        written.append(threading.current_thread().name)

    records = tmp_path / "staging" / "progress"
    monkeypatch.setattr(Progress, "write_record", lambda self: None)
    tracker = Progress(interval_s=0.01, records=str(records))  # its first record: before the thread
    monkeypatch.setattr(Progress, "write_record", held_write)
    assert writing.wait(timeout=60)  # the thread is inside a write
    stopper = threading.Thread(target=tracker.stop)
    stopper.start()
    stopper.join(timeout=0.5)
    assert stopper.is_alive() and not written  # stop() is waiting for the write, not returning
    release.set()
    stopper.join(timeout=60)
    assert not stopper.is_alive() and written == ["grit-progress"]
    assert not tracker._thread.is_alive()
