"""Input readers: url tables in every format, GRIT-20M files, and real img2dataset output folders."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from img2dataset_runs import img2dataset

from grit_pipeline.inputs import (
    InputConfig,
    InputError,
    file_format,
    keep_column_fields,
    list_input_files,
    read_file,
    read_retry_rows,
)
from grit_pipeline.schemas import REJECTS_SCHEMA, reject_row, write_table
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

ROWS = [
    {"url": "http://example.com/a.jpg", "caption": "a red car", "license": "cc0"},
    {"url": "http://example.com/b.jpg", "caption": "a dog on grass", "license": "cc-by"},
    {"url": "", "caption": "no url here", "license": "cc0"},
]


def write_csv(path, rows, delimiter=","):
    lines = [delimiter.join(rows[0])] + [delimiter.join(str(v) for v in r.values()) for r in rows]
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize("name", ["in.csv", "in.tsv.gz", "in.jsonl", "in.jsonl.gz", "in.parquet"])
def test_url_tables_in_every_format(tmp_path, name):
    path = tmp_path / name
    if ".csv" in name or ".tsv" in name:
        write_csv(path, ROWS, "\t" if ".tsv" in name else ",")
    elif ".jsonl" in name:
        text = "".join(json.dumps(r) + "\n" for r in ROWS)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "wt") as handle:
            handle.write(text)
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    config = InputConfig(keep_columns=("license",))
    rows = list(read_file(str(path), config))
    assert [r.caption for r in rows] == [r["caption"] for r in ROWS]
    assert [r.url for r in rows[:2]] == [ROWS[0]["url"], ROWS[1]["url"]]
    assert [r.fields["license"] for r in rows] == ["cc0", "cc-by", "cc0"]
    assert [r.key for r in rows] == ["in-000000000", "in-000000001", "in-000000002"]
    assert rows[2].reject[0] == "missing_url"
    assert rows[0].reject is None and rows[0].image is None


def test_custom_column_names_and_clear_error_for_missing_ones(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"link": ["http://x/1.jpg"], "alt": ["a cat"], "n": [7]}), path)
    rows = list(
        read_file(str(path), InputConfig(url_column="link", caption_column="alt", keep_columns=("n",)))
    )
    assert (rows[0].url, rows[0].caption, rows[0].fields) == ("http://x/1.jpg", "a cat", {"n": 7})
    assert keep_column_fields(str(path), InputConfig(keep_columns=("n",))) == [pa.field("n", pa.int64())]
    with pytest.raises(InputError, match="--url-column"):
        list(read_file(str(path), InputConfig()))


def test_bad_jsonl_line_is_a_reject_not_a_crash(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"url": "http://x/1.jpg", "caption": "a cat"}\nnot json\n[1, 2]\n')
    rows = list(read_file(str(path), InputConfig()))
    assert [r.reject[0] if r.reject else None for r in rows] == [None, "bad_input_row", "bad_input_row"]


def test_grit20m_file_keeps_key_id_and_clip_scores(tmp_path):
    path = tmp_path / "coyo_0_snappy.parquet"
    table = pa.table(
        {
            "key": ["000373938"],
            "id": pa.array([1], pa.int64()),
            "url": ["http://x/1.jpg"],
            "caption": ["a wire hanger with a paper cover"],
            "width": [1024],
            "height": [693],
            "clip_similarity_vitb32": [0.29],
            "clip_similarity_vitl14": [0.25],
            "noun_chunks": [[[0.0, 13.0, 0.1, 0.2, 0.3, 0.4, 0.7]]],
            "ref_exps": [[[0.0, 13.0, 0.1, 0.2, 0.3, 0.4, 0.7]]],
        }
    )
    pq.write_table(table, path)
    assert file_format(str(path), InputConfig()) == "table"
    [row] = read_file(str(path), InputConfig())
    assert row.key == "000373938"
    assert row.fields == {"id": 1, "clip_similarity_vitb32": 0.29, "clip_similarity_vitl14": 0.25}


@pytest.fixture(scope="module")
def img2dataset_outputs(tmp_path_factory):
    """Real img2dataset runs (its own classes, in process) over loopback URLs, in its parquet and webdataset formats."""
    root = tmp_path_factory.mktemp("i2d")
    with LoopbackServer() as server:
        urls = [server.add(f"/{i}.jpg", Route(jpeg_bytes(300 + i, 200))) for i in range(3)]
        urls.append(server.url("/missing.jpg"))  # a 404: img2dataset records a failed row
        table = pa.table(
            {"url": urls, "caption": [f"a red square number {i}" for i in range(4)], "lic": ["cc0"] * 4}
        )
        pq.write_table(table, root / "urls.parquet")
        outputs = {fmt: root / fmt for fmt in ("parquet", "webdataset")}
        for fmt, folder in outputs.items():  # keep_ratio: img2dataset resizes, the aspect stays
            img2dataset(root / "urls.parquet", folder, "keep_ratio", fmt, keep_columns=["lic"])
    return outputs


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_img2dataset_output_folder_is_read_without_downloading(img2dataset_outputs, fmt):
    files = list_input_files(str(img2dataset_outputs[fmt]))
    assert files and all(f.endswith(".tar" if fmt == "webdataset" else ".parquet") for f in files)
    rows = [r for f in files for r in read_file(f, InputConfig(keep_columns=("lic",)))]
    good = sorted((r for r in rows if r.reject is None), key=lambda r: r.caption)
    assert [r.caption for r in good] == [f"a red square number {i}" for i in range(3)]
    assert all(r.image and r.image[:2] == b"\xff\xd8" for r in good)  # JPEG bytes, no URL fetched
    assert [r.original_size for r in good] == [(300 + i, 200) for i in range(3)]
    assert all(r.fields["lic"] == "cc0" and len(r.sha256) == 64 for r in good)
    failed = [r for r in rows if r.reject is not None]
    # The parquet output keeps img2dataset's failed row; webdataset tars hold successes only.
    assert [r.reject[0] for r in failed] == (["no_image_in_source"] if fmt == "parquet" else [])


def test_listing_skips_hidden_underscore_and_unsupported_files(tmp_path):
    for name in ("a.csv", "b.jsonl.gz", ".hidden.csv", "_stats.json", "notes.txt", "sub/c.parquet"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    assert [p.rsplit("/", 1)[-1] for p in list_input_files(str(tmp_path))] == [
        "a.csv",
        "b.jsonl.gz",
        "c.parquet",
    ]
    assert len(list_input_files(str(tmp_path / "*.csv"))) == 1
    with pytest.raises(InputError, match="no such input"):
        list_input_files(str(tmp_path / "missing"))


def test_retry_rows_are_the_transient_rejects(tmp_path):
    path = str(tmp_path / "rejects.parquet")
    rows = [
        reject_row("k1", "http://x/1", "a cat", "fetch", "timeout", "timed out"),
        reject_row("k2", "http://x/2", "a dog", "fetch", "http_404", "HTTP 404"),
        reject_row("k3", "http://x/3", "a cow", "fetch", "http_503", "HTTP 503"),
    ]
    write_table(rows, path, REJECTS_SCHEMA)
    retried = list(read_retry_rows(path, frozenset({"timeout", "http_503"})))
    assert [(r.key, r.url, r.caption) for r in retried] == [
        ("k1", "http://x/1", "a cat"),
        ("k3", "http://x/3", "a cow"),
    ]


def test_rejects_are_writable_whatever_the_reader_handed_over(tmp_path):
    path = str(tmp_path / "rejects.parquet")
    rows = [
        reject_row(5, 7, ["a", 1], "read", "bad_input_row", ValueError("x"), {"n": 1}),
        reject_row("k", b"\xff", "bad \udcff byte", "read", "bad_input_row"),
    ]
    write_table(rows, path, REJECTS_SCHEMA)
    table = pq.read_table(path).to_pylist()
    assert [(r["key"], r["url"], r["caption"]) for r in table] == [
        ("5", "7", '["a", 1]'),
        ("k", "\\xff", "bad \\udcff byte"),
    ]
    assert json.loads(table[0]["fields"]) == {"n": 1}


def test_over_long_fields_and_non_string_captions_are_bad_rows(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"url": "http://x/1.jpg", "caption": "a cat " * 100})
        + "\n"
        + json.dumps({"url": "http://x/2.jpg", "caption": 42})
        + "\n"
    )
    rows = list(read_file(str(path), InputConfig(max_field_chars=100)))
    assert [r.reject[0] for r in rows] == ["bad_input_row", "bad_input_row"]
    assert "600 characters, over 100" in rows[0].reject[1]
    assert rows[1].caption == "42"  # kept as text for the rejects table


def test_generated_keys_stay_unique_across_files_with_the_same_name(tmp_path):
    from grit_pipeline.inputs import key_prefixes

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_csv(tmp_path / folder / "part.csv", ROWS[:1])
    files = list_input_files(str(tmp_path))
    prefixes = key_prefixes(files)
    keys = [r.key for f in files for r in read_file(f, InputConfig(), prefixes[f])]
    assert len(keys) == len(set(keys)) == 2
