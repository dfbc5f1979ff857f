"""A gs:// or s3:// path without its file system installed: one line naming the extra, exit 2, nothing written.

gcsfs and s3fs are installed on this machine (the emulator tests need them), so their absence is
simulated: the ``gcsfs``/``s3fs`` entries of ``sys.modules`` are set to None, which makes their
import raise ImportError exactly as on a machine without them, and fsspec's registry of already
loaded implementations is emptied of gs/s3 so fsspec imports them afresh (and fails). fsspec's
own lookup (``get_filesystem_class``) then runs unchanged, as it would on a user's machine.
"""

from __future__ import annotations

import importlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import run
from grit_pipeline.cli import main

EXTRA = {"gs": "grit-pipeline[gcp]", "s3": "grit-pipeline[aws]"}
PACKAGE = {"gs": "gcsfs", "s3": "s3fs"}


@pytest.fixture
def without_object_stores(monkeypatch):
    registry = importlib.import_module("fsspec.registry")  # `fsspec.registry` is the mapping
    for package in ("gcsfs", "s3fs"):
        monkeypatch.setitem(sys.modules, package, None)  # `import gcsfs` raises ImportError
    for protocol in ("gs", "gcs", "s3", "s3a"):
        monkeypatch.delitem(registry._registry, protocol, raising=False)


def one_line_error(capsys, command: str, protocol: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"grit {command}: error: ")
    assert f"pip install '{EXTRA[protocol]}'" in err and PACKAGE[protocol] in err
    return err


@pytest.mark.parametrize("protocol", ["gs", "s3"])
def test_build_output_on_a_missing_file_system_is_one_line_and_writes_nothing(
    tmp_path, capsys, without_object_stores, protocol
):
    pq.write_table(
        pa.table({"url": ["http://127.0.0.1:1/a.jpg"], "caption": ["a cat"]}), tmp_path / "in.parquet"
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", f"{protocol}://bucket/out"]
    assert run([*argv, "--detector", "tiny-random"]) == 2
    assert f"{protocol}://bucket/out" in one_line_error(capsys, "build", protocol)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("protocol", ["gs", "s3"])
def test_build_input_on_a_missing_file_system_is_refused_before_the_output_is_touched(
    tmp_path, capsys, without_object_stores, protocol
):
    out = tmp_path / "out"
    argv = ["--input", f"{protocol}://bucket/in.parquet", "--output", str(out), "--detector", "tiny-random"]
    assert run(argv) == 2
    assert f"{protocol}://bucket/in.parquet" in one_line_error(capsys, "build", protocol)
    assert not out.exists()  # no lock, no staging, no manifest


@pytest.mark.parametrize("protocol", ["gs", "s3"])
def test_inspect_on_a_missing_file_system_is_one_line(capsys, without_object_stores, protocol):
    assert main(["inspect", f"{protocol}://bucket/out"]) == 2
    one_line_error(capsys, "inspect", protocol)


@pytest.mark.parametrize("protocol", ["gs", "s3"])
def test_train_on_a_missing_file_system_is_one_line_and_writes_nothing(
    tmp_path, capsys, without_object_stores, protocol
):
    out = tmp_path / "train-out"
    assert main(["train", "--data", f"{protocol}://bucket/out", "--out", str(out), "--max-steps", "1"]) == 2
    one_line_error(capsys, "train", protocol)
    assert not out.exists()
