"""Hostile and careless inputs (issue 14's table): each ends as rejects with a reason, or as one line and exit 2.

One real `grit build` (tiny random detector, loopback server) reads a folder holding one file per
case, each with good rows beside the bad ones; every case then checks its own rows by their key
prefix (the file's stem): the reason of each bad row, the good rows accepted, and that the file's
rows add up (input = accepted + rejected). Files that cannot be read at all stop the build before
it starts, with one line and exit status 2.
"""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.inputs import InputConfig, check_input_files, read_file
from grit_pipeline.schemas import list_shard_files, read_shard
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--timeout", "10"]
COMMON += ["--retries", "0", "--progress-interval", "0"]
LONG_CAPTION = "a red square " + "x" * 131_072  # over Python csv's default field limit


def _csv(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _jsonl(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def make_cases(folder, good) -> dict[str, tuple[int, dict[int, str]]]:
    """Write one input file per case; returns {stem: (rows in the file, {row index: expected reason})}."""
    _csv(
        folder / "utf8_csv.csv",
        [b"url,caption", f"{good(0)},a red square".encode(), f"{good(1)},a caf\xe9 sign".encode("latin-1")],
    )
    _jsonl(
        folder / "utf8_jsonl.jsonl",
        [
            json.dumps({"url": good(2), "caption": "a blue square"}).encode(),
            b'{"url": "' + good(3).encode() + b'", "caption": "a bad \xff byte"}',
        ],
    )
    _csv(folder / "long_caption.csv", [b"url,caption", f"{good(4)},{LONG_CAPTION}".encode()])
    pq.write_table(
        pa.table({"url": pa.array([1, 2], pa.int64()), "caption": ["a number", "another number"]}),
        folder / "int_url.parquet",
    )
    pq.write_table(
        pa.table({"url": [[good(5)], [good(6), good(7)]], "caption": ["a list", "two lists"]}),
        folder / "list_url_parquet.parquet",
    )
    _jsonl(
        folder / "list_url.jsonl",
        [
            json.dumps({"url": [good(8)], "caption": "a square in a list"}).encode(),
            json.dumps({"url": 7, "caption": "a square behind a number"}).encode(),
            json.dumps({"url": good(9), "caption": "a green square"}).encode(),
        ],
    )
    _jsonl(
        folder / "keys.jsonl",
        [
            json.dumps({"key": "k1", "url": good(10), "caption": "a yellow square"}).encode(),
            json.dumps({"key": "k1", "url": good(11), "caption": "a square with a taken key"}).encode(),
            json.dumps({"key": 7, "url": good(12), "caption": "a square with a number key"}).encode(),
            json.dumps({"key": [1], "url": good(13), "caption": "a square with a list key"}).encode(),
        ],
    )
    _csv(folder / "header_only.csv", [b"url,caption"])
    _csv(folder / "broken_line.csv", [b"url,caption", f"{good(14)},a square,an extra field".encode()])
    return {
        "utf8_csv": (2, {1: "bad_input_row"}),
        "utf8_jsonl": (2, {1: "bad_input_row"}),
        "long_caption": (1, {0: "caption_too_long"}),
        "int_url": (2, {0: "bad_input_row", 1: "bad_input_row"}),
        "list_url_parquet": (2, {0: "bad_input_row", 1: "bad_input_row"}),
        "list_url": (3, {0: "bad_input_row", 1: "bad_input_row"}),
        "keys": (4, {1: "duplicate_key", 3: "bad_input_row"}),
        "header_only": (0, {}),
        "broken_line": (1, {0: "bad_input_row"}),
    }


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "in").mkdir()
    with LoopbackServer() as server:

        def good(i: int) -> str:
            return server.add(f"/good/{i}.jpg", Route(jpeg_bytes(100 + 5 * i, 90, (20 * i % 255, 90, 200))))

        cases = make_cases(root / "in", good)
        status = run(["--input", str(root / "in"), "--output", str(root / "out"), *COMMON])
    rejects = pa.concat_tables(pq.read_table(p) for p in sorted((root / "out" / "rejects").glob("*.parquet")))
    accepted = [r for p in list_shard_files(str(root / "out" / "shards")) for r in read_shard(p).to_pylist()]
    return status, cases, rejects.to_pylist(), accepted, load_manifest(str(root / "out"))


def _of(stem: str, keys) -> list[str]:
    return [k for k in keys if k.startswith(f"{stem}-")]


@pytest.mark.parametrize(
    "stem",
    [
        "utf8_csv",
        "utf8_jsonl",
        "long_caption",
        "int_url",
        "list_url_parquet",
        "list_url",
        "header_only",
        "broken_line",
    ],
)
def test_each_bad_row_is_a_reject_with_its_reason(build, stem):
    status, cases, rejects, accepted, _ = build
    assert status == 0
    rows, expected = cases[stem]
    got = {r["key"]: r["reason"] for r in rejects if r["key"].startswith(f"{stem}-")}
    assert got == {f"{stem}-{i:09d}": reason for i, reason in expected.items()}
    good = _of(stem, [r["key"] for r in accepted])
    assert sorted(good) == [f"{stem}-{i:09d}" for i in range(rows) if i not in expected]
    assert len(good) + len(got) == rows  # this file's input = accepted + rejected


def test_bad_input_rows_say_where_and_what(build):
    _, _, rejects, _, _ = build
    by_key = {r["key"]: r for r in rejects}
    assert (
        "utf8_csv.csv line 3: column 'caption' holds bytes that are not UTF-8"
        in by_key["utf8_csv-000000001"]["error"]
    )
    assert "should hold text, got int" in by_key["int_url-000000000"]["error"]
    assert by_key["int_url-000000000"]["url"] == "1"  # stored as its text: the reject is writable
    assert by_key["list_url-000000000"]["url"].startswith('["http://127.0.0.1:')  # a list, as JSON text
    assert "3 fields, the header has 2" in by_key["broken_line-000000000"]["error"]


def test_keys_are_unique_in_the_build(build):
    _, _, rejects, accepted, manifest = build
    keys = [r["key"] for r in accepted]
    assert len(keys) == len(set(keys))
    assert {"k1", "7"} <= set(keys)  # the first k1 wins; an integer key is its decimal text
    taken = [r for r in rejects if r["reason"] == "duplicate_key"]
    assert [r["caption"] for r in taken] == ["a square with a taken key"]
    counts = manifest["counts"]
    assert counts["input"] == counts["accepted"] + counts["rejected"] == sum(n for n, _ in build[1].values())


def _one_line_error(capsys, argv) -> str:
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("grit build: error: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("not_gzip.csv.gz", b"url,caption\nhttp://127.0.0.1/a.jpg,a cat\n", "gzip"),
        ("empty.csv", b"", "is empty"),
        ("no_url.csv", b"link,caption\nhttp://127.0.0.1/a.jpg,a cat\n", "--url-column"),
        ("no_caption.csv", b"url,alt\nhttp://127.0.0.1/a.jpg,a cat\n", "['caption']"),
        ("not_parquet.parquet", b"PAR1 this is not a parquet file", "parquet"),
    ],
)
def test_unreadable_files_stop_before_the_job_in_one_line(tmp_path, capsys, name, content, says):
    (tmp_path / name).write_bytes(content)
    err = _one_line_error(
        capsys, ["--input", str(tmp_path / name), "--output", str(tmp_path / "out"), *COMMON]
    )
    assert name in err and says in err
    assert not any((tmp_path / "out" / name).exists() for name in ("shards", "rejects", "manifest.json"))


def test_glob_matching_nothing_is_one_line(tmp_path, capsys):
    err = _one_line_error(
        capsys, ["--input", str(tmp_path / "*.csv"), "--output", str(tmp_path / "out"), *COMMON]
    )
    assert "no input files" in err


def test_header_only_and_empty_jsonl_read_as_zero_rows(tmp_path):
    (tmp_path / "h.csv").write_text("url,caption\n")
    (tmp_path / "e.jsonl").write_text("")
    files = [str(tmp_path / "h.csv"), str(tmp_path / "e.jsonl")]
    check_input_files(files, InputConfig())  # no error: zero rows is a valid input
    assert [list(read_file(f, InputConfig())) for f in files] == [[], []]


def test_a_file_that_breaks_off_midway_ends_with_one_unreadable_file_reject(tmp_path):
    lines = b"url,caption\n" + b"".join(
        b"http://127.0.0.1/%d.jpg,a cat number %d\n" % (i, i) for i in range(5000)
    )
    data = gzip.compress(lines)
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    rows = list(read_file(str(tmp_path / "cut.csv.gz"), InputConfig()))
    assert all(r.reject is None for r in rows[:-1]) and len(rows) > 1
    assert rows[-1].reject[0] == "unreadable_file" and "unreadable after" in rows[-1].reject[1]
