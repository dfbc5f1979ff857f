"""The worker image's install steps (beam_jobs/worker_image/install-worker.sh), run in a fresh venv.

There is no Docker engine here, so the script the Dockerfile runs is run on its own: in a new venv
with the project's wheel and a staged detector folder to bake in. The venv is made with
--system-site-packages: torch alone is 4.7 GB, more than a test may download, so the machine's
torch, transformers and spaCy satisfy the dependencies (the script still resolves them with pip);
the package itself must come from the wheel into the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from grit_pipeline.grounding import staging
from grit_pipeline.grounding.tiny import cached_tiny_detector
from grit_pipeline.testing.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_the_install_script_puts_the_wheel_the_spacy_pipeline_and_the_weights_in_a_fresh_venv(tmp_path):
    wheel = build_wheel(tmp_path / "dist", tmp_path / "source", root=ROOT)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    detector = tmp_path / "detector"
    staging.stage_detector(str(cached_tiny_detector()), f"file://{detector}")
    baked = tmp_path / "opt" / "detector"
    env = {**os.environ, "PYTHON": str(venv / "bin" / "python"), "GRIT_DETECTOR_HOME": str(baked)}
    done = subprocess.run(
        ["bash", str(ROOT / "beam_jobs" / "worker_image" / "install-worker.sh"), str(wheel), str(detector)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"installed in {venv}" in done.stdout
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import grit_pipeline; print(grit_pipeline.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the checkout, whose folder would shadow the installed package
    )
    assert Path(located.stdout.strip()).is_relative_to(venv)  # the wheel's copy, not the checkout's
    assert (
        subprocess.run([str(venv / "bin" / "grit"), "--version"], capture_output=True, check=False).returncode
        == 0
    )
    assert staging.verify_folder(str(baked)).checksum == staging.verify_folder(str(detector)).checksum


def test_the_dockerfile_runs_the_install_script_on_beams_sdk_image():
    dockerfile = (ROOT / "beam_jobs" / "worker_image" / "Dockerfile").read_text()
    import apache_beam

    assert f"ARG BEAM_VERSION={apache_beam.__version__}" in dockerfile
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    assert "/tmp/grit/install-worker.sh" in dockerfile
