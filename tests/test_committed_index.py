"""Readers take manifest.json's committed file index, never a listing of the folder (issue 18, item 3).

A finished local build (the example, tiny detector) gets a stray ``.parquet`` dropped into its
``shards/`` and ``rejects/``, as a failed and retried bundle leaves one behind on an object store.
The stray shard has a distinctive key and only a ``key`` column, so any reader that opened it
would count an extra row, fail validation (missing columns) or see its key as taken.
"""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.dedup import UniqueKeys, committed_shards
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.beam_jobs.records import REJECTS, Row
from grit_pipeline.cli import main
from grit_pipeline.inputs import InputRow
from grit_pipeline.schemas import REJECTS_SCHEMA, list_shard_files, read_shard, reject_row, write_table

STRAY_KEY = "stray-key"


@pytest.fixture(scope="module")
def build_with_strays(tmp_path_factory):
    out = tmp_path_factory.mktemp("committed") / "out"
    assert run(["--example", "--output", str(out), "--detector", "tiny-random"]) == 0
    pq.write_table(pa.table({"key": [STRAY_KEY]}), out / "shards" / "shard-999999.parquet")
    (out / "rejects").mkdir(exist_ok=True)
    stray_reject = reject_row("stray-reject", None, "c", "fetch", "stray_reason")
    write_table([stray_reject], str(out / "rejects" / "rejects-999999.parquet"), REJECTS_SCHEMA)
    return out


def test_list_shard_files_returns_only_committed_files(build_with_strays):
    out = build_with_strays
    index = load_manifest(str(out))["files"]
    for path in (str(out), str(out / "shards"), str(out / "shards" / "*.parquet")):
        found = list_shard_files(path)  # the trainer's file list (model/data.py) is this call on --data
        assert sorted(f"{out}/{name}" for name in index["shards"]) == found
        assert not any("999999" in f for f in found)
    rejects = list_shard_files(str(out), "rejects")
    assert rejects == sorted(f"{out}/{name}" for name in index["rejects"])
    assert not any("999999" in f for f in rejects)


def test_inspect_and_validate_never_read_the_strays(build_with_strays, capsys):
    out = build_with_strays
    capsys.readouterr()
    assert main(["inspect", "--json", "--quiet", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 5 and len(report["shards"]) == 1
    assert "stray_reason" not in json.dumps(report)
    assert main(["validate", str(out)]) == 0  # the stray has no caption column: reading it would fail
    assert "valid: 5 rows in 1 shard(s)" in capsys.readouterr().out


def test_the_next_runs_committed_keys_leave_out_the_strays(build_with_strays):
    out = build_with_strays
    shards = committed_shards(str(out))
    assert shards and not any("999999" in s for s in shards)
    taken = read_shard(shards[0], columns=["key"])["key"][0].as_py()
    rows = [
        Row(InputRow(STRAY_KEY, "http://x/1.jpg", "a cat", "b.csv")),
        Row(InputRow(taken, "http://x/2.jpg", "a dog", "b.csv")),
    ]
    with BeamTestPipeline() as pipeline:
        unique = pipeline | beam.Create(rows) | UniqueKeys(shards)
        assert_that(unique.rows | beam.Map(lambda r: r.key), equal_to([STRAY_KEY]), label="kept")
        reasons = unique[REJECTS] | beam.Map(lambda r: (r["key"], r["reason"]))
        assert_that(reasons, equal_to([(taken, "duplicate_key")]), label="taken")


def test_the_trainer_reads_the_committed_shards_only(build_with_strays, tmp_path, capsys):
    """``grit train`` on the build: the stray (a key column only, no image or caption) would stop it."""
    out = tmp_path / "train"
    argv = [
        "train",
        "--data",
        str(build_with_strays),
        "--out",
        str(out),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert "trained to step 1" in capsys.readouterr().out
