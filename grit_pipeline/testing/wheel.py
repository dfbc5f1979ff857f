"""The project's wheel, built from a copy of a checkout (an in-place build would reuse its ./build).

pip builds it in an isolated environment with the build requirements pyproject.toml names
(setuptools>=68 and wheel, fetched from PyPI), as a user's `pip wheel .` would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def build_wheel(out: Path, source: Path, *, root: Path, isolated: bool = True) -> Path:
    """The wheel of checkout ``root``'s tracked and untracked-but-not-ignored files, copied into
    ``source`` and written into ``out`` (``isolated=False``: with this environment's setuptools, no
    build requirements fetched)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    )
    for name in listed.stdout.splitlines():
        if (root / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
    command += [] if isolated else ["--no-build-isolation"]
    subprocess.run([*command, str(source)], check=True, capture_output=True)
    (wheel,) = out.glob("grit_pipeline-*.whl")
    return wheel
