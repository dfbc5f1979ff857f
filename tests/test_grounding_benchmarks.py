"""The GPU grounding benchmark's dry run: every step of the script (detector part, saved model, a
full `grit build` over a loopback server) on CPU with the tiny architecture, so it is known to work
before it is run once on a CUDA machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_dry_run_goes_end_to_end_on_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = ROOT / "benchmarks" / "gpu_grounding.py"
    done = subprocess.run([sys.executable, str(script), "--dry-run"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT gpu_hours_per_million_images ")
    assert float(lines[-1].split()[2]) > 0
    assert any(line.startswith("grit build (full)") for line in lines)
    assert "accepted" in done.stdout
