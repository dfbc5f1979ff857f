"""Device and thread choice for worker processes, as plain functions (there is no GPU here)."""

from __future__ import annotations

import subprocess
import sys

from grit_pipeline.grounding.devices import choose_device, cpu_quota, sdk_processes_here, usable_cores


def test_detector_instances_are_spread_over_the_gpus_of_a_machine():
    assert [choose_device("auto", 4, slot) for slot in range(6)] == [f"cuda:{i % 4}" for i in range(6)]
    assert {choose_device("cuda", 2, slot) for slot in range(10)} == {"cuda:0", "cuda:1"}
    assert choose_device("cpu", 8, 3) == "cpu" and choose_device("cuda:3", 8, 0) == "cuda:3"
    assert choose_device("auto", 0, 7) == "cpu"


def test_a_cgroup_quota_caps_the_cores_a_process_may_use(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert cpu_quota(tmp_path) == 2.5
    assert usable_cores(affinity=16, quota=2.5) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None and usable_cores(affinity=16, quota=None) == 16
    assert cpu_quota(tmp_path / "absent") is None


def test_the_sdk_processes_of_a_machine_are_counted_and_dead_ones_dropped(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / gone.stdout.strip()).touch()  # a process that has exited
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / str(sleeper.pid)).touch()
        assert sdk_processes_here(tmp_path) == 2  # this one and the sleeper
        assert not (tmp_path / gone.stdout.strip()).exists()
    finally:
        sleeper.kill()
        sleeper.wait()
