"""Issue 14's URL rows through the real ``grit build`` (in-process, tiny random detector, loopback
server): each row ends with its reason, input = accepted + rejected, the job exits 0, and the
``invalid_url`` rows are not transient, so ``--retry-rejects`` leaves them alone."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.fetch import TRANSIENT_REASONS
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

FULL_WIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--timeout", "10", "--retries", "1"]
POLITENESS = [
    "--max-host-connections",
    "2",
    "--max-host-rate",
    "4",
    "--total-timeout",
    "20",
    "--max-retry-after",
    "5",
]


def url_rows(server: LoopbackServer) -> list[tuple[str, str | None]]:
    """(url, expected reject reason or None) for each of the table's URL rows."""
    image = server.add("/table/red.jpg", Route(jpeg_bytes(200, 150, (0, 90, 200))))
    port = str(server.port)
    return [
        (image.replace("http://", "http://user@"), None),  # user info parsed off: the host is 127.0.0.1
        (image.replace("http://", "http://user:secret@"), None),
        ("http://", "invalid_url"),
        (image.replace(f":{port}/", f":{port.translate(FULL_WIDTH)}/"), "invalid_url"),
        (image.replace("127.0.0.1", "127.0.0.1".translate(FULL_WIDTH)), "invalid_url"),
        (image + "\r\nX-Injected: 1", "invalid_url"),
        (image.replace("red", "r\x00ed"), "invalid_url"),
        (image.replace(f":{port}/", f":{int(port) + 65536}/"), "invalid_url"),
    ]


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as srv:
        yield srv


def test_url_rows_of_the_table_build_to_their_reasons(server, tmp_path):
    rows = url_rows(server)
    # The same caption everywhere: the rows differ only in their URL (dedup is by URL).
    table = [{"url": url, "caption": "a red square on a grey background"} for url, _ in rows]
    pq.write_table(pa.Table.from_pylist(table), tmp_path / "in.parquet")
    out = tmp_path / "out"
    assert run(["--input", str(tmp_path / "in.parquet"), "--output", str(out), *COMMON, *POLITENESS]) == 0
    rejects = pa.concat_tables(pq.read_table(p) for p in sorted((out / "rejects").glob("*.parquet")))
    got = dict(zip(rejects["url"].to_pylist(), rejects["reason"].to_pylist()))
    assert got == {url: reason for url, reason in rows if reason}
    manifest = load_manifest(str(out))
    fetch = manifest["config"]["fetch"]
    assert (fetch["max_host_connections"], fetch["max_host_requests_per_s"]) == (2, 4.0)
    assert (fetch["total_timeout_s"], fetch["max_retry_after_s"]) == (20.0, 5.0)
    counts = manifest["counts"]
    assert counts["input"] == len(rows) == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == 2 and server.hits["/table/red.jpg"] == 2
    assert not set(got.values()) & TRANSIENT_REASONS  # what --retry-rejects would pick up


def test_total_timeout_below_one_attempt_is_one_clear_error(tmp_path, capsys):
    pq.write_table(pa.Table.from_pylist([{"url": "http://", "caption": "a square"}]), tmp_path / "in.parquet")
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *COMMON]
    assert run([*argv, "--timeout", "30", "--total-timeout", "10"]) == 2
    assert "--total-timeout" in capsys.readouterr().err
