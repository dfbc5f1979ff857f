"""The built wheel: model/, beam_jobs/ and schemas/ live inside the grit_pipeline namespace."""

import subprocess
import zipfile
from pathlib import Path

import pytest

from grit_pipeline.testing.wheel import build_wheel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the checkout: an in-place build would reuse a stale ./build folder."""
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    wheel = build_wheel(out, source, root=ROOT, isolated=False)
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        return archive.namelist(), archive.read(entry_points).decode()


def test_no_generic_top_level_names(wheel):
    wheel_names, _ = wheel
    top_level = {name.split("/", 1)[0] for name in wheel_names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"grit_pipeline"}


def test_mapped_packages_are_inside_the_namespace(wheel):
    wheel_names, _ = wheel
    for package in ("model", "beam_jobs", "schemas", "grounding", "shards", "evalsets"):
        assert f"grit_pipeline/{package}/__init__.py" in wheel_names
    assert "grit_pipeline/schemas/shard.py" in wheel_names


def test_console_script(wheel):
    _, entry_points = wheel
    assert "grit = grit_pipeline.cli:main" in entry_points


def test_grit_command_runs():
    result = subprocess.run(["grit", "--help"], capture_output=True, text=True, check=True)
    for command in ("build", "parse", "ground", "inspect", "validate", "show", "convert", "train", "eval"):
        assert command in result.stdout


def test_every_module_of_the_tree_is_in_the_wheel(wheel):
    """A package folder missing from pyproject's explicit list would install from a checkout but not from the wheel."""
    wheel_names, _ = wheel
    mapping = {"grit_pipeline": "grit_pipeline", "model": "grit_pipeline/model"}
    mapping |= {"beam_jobs": "grit_pipeline/beam_jobs", "schemas": "grit_pipeline/schemas"}
    expected = {
        f"{target}/{path.relative_to(ROOT / source).as_posix()}"
        for source, target in mapping.items()
        for path in (ROOT / source).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sorted(expected - set(wheel_names)) == []


def test_the_example_input_is_in_the_wheel(wheel):
    """`grit build --example` reads its photos and captions from the installed package (package-data)."""
    wheel_names, _ = wheel
    source = ROOT / "grit_pipeline" / "example_input"
    expected = {
        f"grit_pipeline/example_input/{path.relative_to(source).as_posix()}"
        for path in source.rglob("*")
        if path.is_file()
    }
    assert {"grit_pipeline/example_input/captions.csv", "grit_pipeline/example_input/LICENSES.md"} <= expected
    assert sorted(expected - set(wheel_names)) == []


def test_the_job_reads_the_example_from_the_installed_package():
    from grit_pipeline.beam_jobs.options import EXAMPLE_DIR

    assert (EXAMPLE_DIR / "captions.csv").is_file()
    assert len(list((EXAMPLE_DIR / "photos").glob("*.jpg"))) == 5
