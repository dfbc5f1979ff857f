#!/usr/bin/env bash
# The worker image's install steps, in one place: beam_jobs/worker_image/Dockerfile runs this in Beam's Python SDK
# image, and tests/test_worker_install.py runs it in a fresh venv, so what the image installs is tested.
#
#   install-worker.sh WHEEL [DETECTOR_DIR]
#
# WHEEL: the project's wheel (`make wheel`). DETECTOR_DIR (optional): a saved detector folder
# (`grit stage-detector`, or any save_pretrained folder) baked in at $GRIT_DETECTOR_HOME, so workers
# load weights from their own disk (`--detector /opt/grit-pipeline/detector`).
# PYTHON: the interpreter to install into (default: python). TORCH_SPEC: the torch to install first
# (default torch==2.13.0, PyPI's CUDA build on Linux; the CPU wheel for CPU-only images).
set -euo pipefail
wheel=${1:?usage: install-worker.sh WHEEL [DETECTOR_DIR]}
detector=${2:-}
python=${PYTHON:-python}
target=${GRIT_DETECTOR_HOME:-/opt/grit-pipeline/detector}
pip=("$python" -m pip install --no-cache-dir --disable-pip-version-check)

# The image's Beam SDK stays: the boot program and the job expect exactly that version.
beam=$("$python" -c "import apache_beam; print(apache_beam.__version__)")
# torch first and pinned: the package allows any torch>=2.2, and an unpinned resolve picks whatever is newest.
"${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
# As Beam's boot program installs an --extra_package: this wheel replaces any installed copy
# (without touching its dependencies), then its dependencies are resolved with the SDK held.
"${pip[@]}" --force-reinstall --no-deps "$wheel"
"${pip[@]}" "$wheel" "apache-beam==$beam"

if [ -n "$detector" ]; then
  mkdir -p "$target"
  cp -R "$detector"/. "$target"/
fi

# What a worker needs at start, checked now rather than on the first bundle: the package, the
# spaCy pipeline, the detector backend and, when baked in, the weights (checksums verified).
# From / so that no checkout in the current folder shadows the installed package.
cd /
"$python" - "$target" "$detector" <<'PY'
import sys

import grit_pipeline
from grit_pipeline.grounding import hf_backend  # noqa: F401  (transformers' Grounding DINO imports)
from grit_pipeline.text import load_pipeline

load_pipeline()
if sys.argv[2]:
    from grit_pipeline.grounding.staging import verify_folder

    verify_folder(sys.argv[1])
print(f"grit-pipeline {grit_pipeline.__version__} installed in {sys.prefix}")
PY
