"""The Beam job end to end on the local runner, against a real HTTP server on 127.0.0.1.

One input table exercises every way a row can end (accepted, or rejected at read, dedup, parse,
fetch, ground or assemble); the tests check where each row went, the accounting identity, the
shards themselves, re-runs into the same output, retrying transient rejects, and the same job
in multi_processing mode. The detector is the tiny random Grounding DINO (offline).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.locations import parse_grounded_caption
from grit_pipeline.schemas import SHARD_SCHEMA, list_shard_files, read_shard
from grit_pipeline.testing import LoopbackServer, Route, bomb_png, jpeg_bytes

# The fetch stage applies its own pixel limit; pytest resets the filter that silences Pillow's.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

# Only the server's address is exempt from the address guard, so a redirect to another
# loopback address is refused in the end-to-end run itself. A good image has 2 s per attempt (a
# loaded machine can take longer than 0.5 s to answer); the slow server answers after SLOW_S, so
# it times out however slowly the machine goes.
SLOW_S = 10.0
COMMON = [
    "--detector",
    "tiny-random",
    "--allow-network",
    "127.0.0.1/32",
    "--timeout",
    "2",
    "--retries",
    "1",
]
COMMON += [
    "--backoff",
    "0.05",
    "--progress-interval",
    "0.2",
    "--rows-per-shard",
    "3",
    "--keep-columns",
    "source",
]


def build_cases(server: LoopbackServer) -> list[tuple[str, str, str | None]]:
    """(url, caption, expected reject reason or None) for every case."""
    good = [
        server.add(f"/good/{i}.jpg", Route(jpeg_bytes(200 + 10 * i, 150, (40 * i, 90, 200))))
        for i in range(6)
    ]
    return [
        (good[0], "a red square on a grey background", None),
        (good[1], "a blue box in the middle of a picture", None),
        (good[2], "a small square and a large frame", None),
        (good[3], "a coloured block on a wall", None),
        (good[4], "a painting of a square", None),
        (server.redirect("/redirect-to-good", good[5]), "a square after a redirect", None),
        (
            server.add("/flaky.jpg", Route(jpeg_bytes(90, 90), fail_first=1)),
            "a square behind a flaky server",
            None,
        ),
        (good[0], "the same picture again", "duplicate"),
        (server.url("/missing.jpg"), "a picture that is not there", "http_404"),
        (
            server.add("/slow.jpg", Route(jpeg_bytes(), delay_s=SLOW_S)),
            "a square from a slow server",
            "timeout",
        ),
        (
            server.redirect("/to-private", f"http://127.0.0.2:{server.port}/x.jpg"),
            "a square elsewhere",
            "private_address",
        ),
        (
            server.add("/corrupt.jpg", Route(b"\xff\xd8 definitely not a jpeg" * 20)),
            "a broken square",
            "not_an_image",
        ),
        (
            server.add("/bomb.png", Route(bomb_png(), headers=(("Content-Type", "image/png"),))),
            "a huge grey image",
            "too_many_pixels",
        ),
        (
            server.add("/noai.jpg", Route(jpeg_bytes(), headers=(("X-Robots-Tag", "noai"),))),
            "a square nobody may use",
            "robots_disallowed",
        ),
        (server.add("/a.jpg", Route(jpeg_bytes())), "   ", "empty_caption"),
        (server.add("/b.jpg", Route(jpeg_bytes())), "is and of", "no_noun_chunk"),
        (server.add("/c.jpg", Route(jpeg_bytes())), "a square <b>bold</b>", "unrenderable_caption"),
        ("", "a square without an address", "missing_url"),
    ]


def write_input(path, cases) -> None:
    rows = [{"url": u, "caption": c, "source": f"case-{i}"} for i, (u, c, _) in enumerate(cases)]
    pq.write_table(pa.Table.from_pylist(rows), path)


def rejects_by_caption(output) -> dict[str, str]:
    table = pa.concat_tables(pq.read_table(p) for p in sorted((output / "rejects").glob("*.parquet")))
    return dict(zip(table["caption"].to_pylist(), table["reason"].to_pylist()))


def shard_rows(output) -> list[dict]:
    return [row for path in list_shard_files(str(output / "shards")) for row in read_shard(path).to_pylist()]


@pytest.fixture(scope="module")
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def first_run(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    cases = build_cases(server)
    write_input(root / "input.parquet", cases)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("grit_pipeline.build").addHandler(handler)
    try:
        status = run(["--input", str(root / "input.parquet"), "--output", str(root / "out"), *COMMON])
    finally:
        logging.getLogger("grit_pipeline.build").removeHandler(handler)
    return root, cases, status, records


def test_every_row_ends_where_expected(first_run):
    root, cases, status, _ = first_run
    assert status == 0
    rejected = rejects_by_caption(root / "out")
    expected_rejects = {caption: reason for _, caption, reason in cases if reason}
    assert rejected == expected_rejects
    accepted = sorted(row["caption"] for row in shard_rows(root / "out"))
    assert accepted == sorted(caption for _, caption, reason in cases if reason is None)


def test_accounting_identity_and_manifest(first_run):
    root, cases, _, _ = first_run
    manifest = load_manifest(str(root / "out"))
    counts = manifest["counts"]
    assert counts["input"] == len(cases) == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == len(shard_rows(root / "out"))
    assert sum(counts["by_reason"].values()) == counts["rejected"]
    assert manifest["config"]["detector"]["model"] == "tiny-random"
    assert manifest["provenance"]["detector"] == "tiny-random"
    assert set(manifest["timings"]["stage_busy_s"]) >= {"read", "parse", "fetch", "ground", "write"}
    assert not (root / "out" / "_staging").exists()


def test_shards_are_valid_and_carry_what_was_downloaded(first_run, server):
    root, _, _, _ = first_run
    paths = list_shard_files(str(root / "out" / "shards"))
    assert [p.rsplit("/", 1)[-1] for p in paths] == [f"shard-{i:06d}.parquet" for i in range(len(paths))]
    assert all(pq.read_metadata(p).num_rows <= 3 for p in paths)  # --rows-per-shard 3
    schema = pq.read_schema(paths[0])
    assert schema.names == [*SHARD_SCHEMA.names, "source"]
    by_caption = {row["caption"]: row for row in shard_rows(root / "out")}
    row = by_caption["a red square on a grey background"]
    served = server.routes["/good/0.jpg"].body
    assert row["sha256"] == hashlib.sha256(served).hexdigest()
    assert (row["width"], row["height"]) == (200, 150)
    assert Image.open(io.BytesIO(row["image"])).size == (row["image_width"], row["image_height"])
    assert row["source"] == "case-0"
    for row in by_caption.values():
        text, entities = parse_grounded_caption(row["grounded_caption"])
        assert text == row["caption"] and entities
        assert row["noun_chunks"] and row["ref_exps"]


def test_progress_lines_were_logged(first_run):
    _, _, _, records = first_run
    assert any(r.startswith("progress (pid ") and "rows/s" in r for r in records)
    assert any(r.startswith("done in ") for r in records)


def test_rerun_refuses_skips_or_adds_without_duplicates(first_run, server, tmp_path):
    root, _, _, _ = first_run
    out = root / "out"
    before = load_manifest(str(out))
    assert run(["--input", str(root / "input.parquet"), "--output", str(out), *COMMON]) == 2  # refuse
    assert (
        run(["--input", str(root / "input.parquet"), "--output", str(out), "--mode", "incremental", *COMMON])
        == 0
    )
    assert load_manifest(str(out))["counts"] == before["counts"]  # nothing new, nothing twice
    more = [(server.add("/new.jpg", Route(jpeg_bytes(120, 80))), "a new square on a table", None)]
    write_input(root / "input2.parquet", more)
    argv = [
        "--input",
        str(root / "input.parquet"),
        "--input",
        str(root / "input2.parquet"),
        "--output",
        str(out),
    ]
    assert run([*argv, "--mode", "incremental", *COMMON]) == 0
    after = load_manifest(str(out))
    assert after["counts"]["input"] == before["counts"]["input"] + 1
    assert after["counts"]["accepted"] == before["counts"]["accepted"] + 1
    keys = [row["key"] for row in shard_rows(out)]
    assert len(keys) == len(set(keys)) == after["counts"]["accepted"]
    assert len(after["runs"]) == 2


def test_retry_rejects_reruns_transient_failures_only(server, tmp_path):
    cases = [
        (
            server.add("/retry/slow.jpg", Route(jpeg_bytes(), delay_s=SLOW_S)),
            "a square from a slow server",
            "timeout",
        ),
        (server.url("/retry/missing.jpg"), "a picture that is not there", "http_404"),
        (server.add("/retry/good.jpg", Route(jpeg_bytes())), "a red square on a table", None),
    ]
    write_input(tmp_path / "in.parquet", cases)
    out = tmp_path / "out"
    assert run(["--input", str(tmp_path / "in.parquet"), "--output", str(out), *COMMON]) == 0
    before = load_manifest(str(out))["counts"]
    assert before["by_reason"] == {"http_404": 1, "timeout": 1}
    server.routes["/retry/slow.jpg"] = Route(jpeg_bytes())  # the slow server recovered
    assert run(["--retry-rejects", str(out), *COMMON]) == 0
    after = load_manifest(str(out))["counts"]
    assert after == {"input": 3, "accepted": 2, "rejected": 1, "by_reason": {"http_404": 1}}
    assert rejects_by_caption(out) == {"a picture that is not there": "http_404"}  # the 404 is not retried
    assert {row["caption"] for row in shard_rows(out)} == {
        "a square from a slow server",
        "a red square on a table",
    }
    # A 404 is retried neither by the fetch stage nor by --retry-rejects.
    assert server.hits["/retry/missing.jpg"] == 1


def test_multi_processing_mode_gives_the_same_result(first_run, tmp_path):
    root, cases, _, _ = first_run
    out = tmp_path / "mp"
    argv = ["--input", str(root / "input.parquet"), "--output", str(out), *COMMON]
    assert run([*argv, "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]) == 0
    assert rejects_by_caption(out) == {caption: reason for _, caption, reason in cases if reason}
    manifest = load_manifest(str(out))
    assert (
        manifest["counts"]["input"]
        == manifest["counts"]["accepted"] + manifest["counts"]["rejected"]
        == len(cases)
    )
    assert manifest["beam_options"]["direct_running_mode"] == "multi_processing"


def test_no_box_above_threshold_is_a_ground_reject(tmp_path, server):
    cases = [
        (server.add("/nobox.jpg", Route(jpeg_bytes(100, 100))), "a red square", "no_box_above_threshold")
    ]
    write_input(tmp_path / "in.parquet", cases)
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *COMMON]
    assert run([*argv, "--box-threshold", "0.99"]) == 0
    table = pq.read_table(next((tmp_path / "out" / "rejects").glob("*.parquet")))
    assert table.select(["stage", "reason"]).to_pylist() == [
        {"stage": "ground", "reason": "no_box_above_threshold"}
    ]


def test_dedup_by_image_hash(tmp_path, server):
    body = jpeg_bytes(77, 77)
    cases = [(server.add(f"/same-{i}.jpg", Route(body)), f"a square number {i}", None) for i in range(2)]
    write_input(tmp_path / "in.parquet", cases)
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *COMMON]
    assert run([*argv, "--dedup", "sha256"]) == 0
    assert list(rejects_by_caption(tmp_path / "out").values()) == ["duplicate"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["accepted"] == 1


def test_batches_bounded_by_waiting_time(tmp_path, server):
    # When a batch leaves after its wait is tested on ShapeBuckets (test_grounding_batching.py).
    cases = [
        (server.add(f"/wait-{i}.jpg", Route(jpeg_bytes(90 + i, 90))), f"a square number {i}", None)
        for i in range(3)
    ]
    write_input(tmp_path / "in.parquet", cases)
    argv = ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *COMMON]
    assert run([*argv, "--max-batch-wait", "0.5"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["accepted"] == 3
    assert manifest["config"]["max_batch_wait_s"] == 0.5
    assert run([*argv, "--mode", "overwrite", "--max-batch-wait", "-1"]) == 2
