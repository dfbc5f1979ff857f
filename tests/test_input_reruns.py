"""Across runs into one OUTPUT: what an earlier committed run accepted stays taken, and retried rows keep their columns.

Real `grit build` runs (tiny random detector, loopback server) into the same folder: an incremental
run must not accept a URL (``--dedup url``), an image hash (``--dedup sha256``) or a key that an
earlier run accepted; ``--retry-rejects`` brings a row back with its ``--keep-columns`` values.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.schemas import list_shard_files, read_shard
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--timeout", "10"]
COMMON += ["--retries", "0", "--progress-interval", "0", "--keep-columns", "lic"]


def write(path, rows) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(k, pa.string()) for k in rows[0]])), path)


def accepted(out) -> dict[str, dict]:
    return {r["key"]: r for p in list_shard_files(str(out / "shards")) for r in read_shard(p).to_pylist()}


def rejects(out) -> dict[str, tuple[str, str]]:
    table = pa.concat_tables(pq.read_table(p) for p in sorted((out / "rejects").glob("*.parquet")))
    return {r["key"]: (r["reason"], r["error"]) for r in table.to_pylist()}


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as srv:
        yield srv


def test_earlier_runs_keep_their_urls_hashes_and_keys(tmp_path, server):
    body = jpeg_bytes(120, 90, (30, 200, 40))
    first = server.add("/first.jpg", Route(body))
    write(tmp_path / "run1.parquet", [{"key": "a", "url": first, "caption": "a green square", "lic": "cc0"}])
    out = tmp_path / "out"
    assert run(["--input", str(tmp_path / "run1.parquet"), "--output", str(out), *COMMON]) == 0
    assert set(accepted(out)) == {"a"}

    second = [
        {"key": "b", "url": first, "caption": "the same address again", "lic": "cc0"},
        {
            "key": "a",
            "url": server.add("/other.jpg", Route(jpeg_bytes(90, 90))),
            "caption": "a key in use",
            "lic": "x",
        },
        {
            "key": "c",
            "url": server.add("/new.jpg", Route(jpeg_bytes(100, 80))),
            "caption": "a new square",
            "lic": "x",
        },
    ]
    write(tmp_path / "run2.parquet", second)
    inputs = ["--input", str(tmp_path / "run1.parquet"), "--input", str(tmp_path / "run2.parquet")]
    assert run([*inputs, "--output", str(out), "--mode", "incremental", *COMMON]) == 0
    assert set(accepted(out)) == {"a", "c"}
    got = rejects(out)
    assert got["b"] == ("duplicate", "an earlier run accepted the same content")
    assert got["a"][0] == "duplicate_key" and "earlier run" in got["a"][1]

    # Same bytes at a new address: a duplicate by hash of what run 1 accepted.
    write(
        tmp_path / "run3.parquet",
        [{"key": "d", "url": server.add("/copy.jpg", Route(body)), "caption": "a copy", "lic": "x"}],
    )
    inputs += ["--input", str(tmp_path / "run3.parquet")]
    assert run([*inputs, "--output", str(out), "--mode", "incremental", "--dedup", "sha256", *COMMON]) == 0
    assert rejects(out)["d"][0] == "duplicate"
    counts = load_manifest(str(out))["counts"]
    assert counts["input"] == 5 == counts["accepted"] + counts["rejected"]
    keys = [r["key"] for p in list_shard_files(str(out / "shards")) for r in read_shard(p).to_pylist()]
    assert len(keys) == len(set(keys))


def test_retry_rejects_keeps_the_keep_columns(tmp_path, server):
    rows = [
        {
            "key": "ok",
            "url": server.add("/ok.jpg", Route(jpeg_bytes(90, 70))),
            "caption": "a red square",
            "lic": "cc0",
        },
        {
            "key": "flaky",
            "url": server.add("/down.jpg", Route(jpeg_bytes(80, 60), status=503)),
            "caption": "a blue square",
            "lic": "cc-by",
        },
    ]
    write(tmp_path / "in.parquet", rows)
    out = tmp_path / "out"
    assert run(["--input", str(tmp_path / "in.parquet"), "--output", str(out), *COMMON]) == 0
    assert rejects(out)["flaky"][0] == "http_503"
    server.routes["/down.jpg"] = Route(jpeg_bytes(80, 60))  # the server is back
    assert run(["--retry-rejects", str(out), *COMMON]) == 0
    assert accepted(out)["flaky"]["lic"] == "cc-by"
    assert load_manifest(str(out))["counts"]["accepted"] == 2
