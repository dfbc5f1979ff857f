"""The shard and rejects schemas, pinned literally, and the reader/writer on real Parquet files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.locations import Box
from grit_pipeline.schemas import (
    PROVENANCE_KEY,
    REJECTS_SCHEMA,
    SHARD_SCHEMA,
    GroundedSpan,
    ShardFormatError,
    iter_rows,
    list_shard_files,
    read_provenance,
    read_shard,
    reject_row,
    shard_schema,
    spans_from_column,
    spans_to_column,
    write_table,
)

SPANS = "list<item: list<item: double>>"


def test_shard_schema_v1_fields_are_pinned():
    assert [(f.name, str(f.type)) for f in SHARD_SCHEMA] == [
        ("key", "string"),
        ("id", "int64"),
        ("url", "string"),
        ("caption", "string"),
        ("width", "int64"),
        ("height", "int64"),
        ("clip_similarity_vitb32", "double"),
        ("clip_similarity_vitl14", "double"),
        ("noun_chunks", SPANS),
        ("ref_exps", SPANS),
        ("grounded_caption", "string"),
        ("image", "binary"),
        ("image_width", "int64"),
        ("image_height", "int64"),
        ("sha256", "string"),
    ]
    assert SHARD_SCHEMA.metadata[b"grit_pipeline.schema"] == b"shard/1"


def test_rejects_schema_v2_fields_are_pinned():
    assert [(f.name, str(f.type)) for f in REJECTS_SCHEMA] == [
        ("key", "string"),
        ("url", "string"),
        ("caption", "string"),
        ("stage", "string"),
        ("reason", "string"),
        ("error", "string"),
        ("fields", "string"),
    ]
    assert REJECTS_SCHEMA.metadata[b"grit_pipeline.schema"] == b"rejects/2"


def _row(key="000000000", caption="a dog on grass"):
    spans = [GroundedSpan(0, 5, Box(0.1, 0.2, 0.5, 0.9), 0.8)]
    return {
        "key": key,
        "url": "http://127.0.0.1/a.jpg",
        "caption": caption,
        "width": 640,
        "height": 480,
        "noun_chunks": spans_to_column(spans),
        "ref_exps": spans_to_column(spans),
        "grounded_caption": "<grounding>...",
        "image": b"\xff\xd8",
        "image_width": 256,
        "image_height": 192,
        "sha256": "0" * 64,
    }


def test_write_then_read_round_trip_with_provenance(tmp_path):
    path = str(tmp_path / "shards" / "00000.parquet")
    provenance = {"detector": "tiny", "box_threshold": 0.65, "num_patches": 32}
    assert write_table([_row()], path, SHARD_SCHEMA, provenance) == 1
    table = read_shard(path)
    assert table.schema.names == SHARD_SCHEMA.names
    row = table.to_pylist()[0]
    assert row["caption"] == "a dog on grass" and row["id"] is None
    assert spans_from_column(row["ref_exps"]) == [GroundedSpan(0, 5, Box(0.1, 0.2, 0.5, 0.9), 0.8)]
    assert read_provenance(path) == provenance
    assert list(tmp_path.joinpath("shards").iterdir()) == [
        tmp_path / "shards" / "00000.parquet"
    ]  # no temp left


def test_pass_through_columns_follow_the_schema(tmp_path):
    schema = shard_schema([pa.field("license", pa.string())])
    path = str(tmp_path / "s.parquet")
    write_table([{**_row(), "license": "cc0"}], path, schema)
    assert read_shard(path).column_names[-1] == "license"
    with pytest.raises(ValueError, match="clash"):
        shard_schema([pa.field("caption", pa.string())])


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "00000.parquet"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        write_table([{**_row(), "width": "not a number"}], str(path), SHARD_SCHEMA)
    assert list(tmp_path.iterdir()) == []


def _grit20m_file(path):
    """A file in the released GRIT-20M layout: start/end as floats, no image columns, COYO metadata."""
    table = pa.table(
        {
            "key": ["000373938"],
            "clip_similarity_vitb32": [0.35],
            "clip_similarity_vitl14": [0.31],
            "id": [1326809],
            "url": ["http://example.invalid/a.jpg"],
            "caption": ["a wire hanger with a paper cover that reads we heart our customers"],
            "width": [1024],
            "height": [693],
            "noun_chunks": [[[19.0, 32.0, 0.0, 0.1, 0.5, 0.7, 0.74], [0.0, 13.0, 0.1, 0.2, 0.9, 0.9, 0.68]]],
            "ref_exps": [[[19.0, 66.0, 0.0, 0.1, 0.5, 0.7, 0.74], [0.0, 66.0, 0.1, 0.2, 0.9, 0.9, 0.68]]],
        }
    )
    pq.write_table(table, path)


def test_reader_opens_grit20m_files(tmp_path):
    path = str(tmp_path / "coyo_0_snappy.parquet")
    _grit20m_file(path)
    table = read_shard(path)
    assert table.schema.names == SHARD_SCHEMA.names
    row = table.to_pylist()[0]
    assert row["image"] is None and row["grounded_caption"] is None and row["id"] == 1326809
    spans = spans_from_column(row["ref_exps"])
    assert (spans[0].start, spans[0].end) == (19, 66) and isinstance(spans[0].start, int)
    assert read_provenance(path) is None


def test_listing_folders_and_globs(tmp_path):
    for name in ["shards/00001.parquet", "shards/00000.parquet", "rejects/00000.parquet"]:
        write_table([_row()] if "shards" in name else [], str(tmp_path / name), SHARD_SCHEMA)
    (tmp_path / "shards" / ".00002.parquet.tmp").write_bytes(b"partial")
    files = list_shard_files(str(tmp_path))
    assert [f.rsplit("/", 2)[-2:] for f in files] == [
        ["shards", "00000.parquet"],
        ["shards", "00001.parquet"],
    ]
    assert list_shard_files(str(tmp_path / "shards" / "*.parquet")) == files
    assert len(list(iter_rows(str(tmp_path / "shards")))) == 2
    with pytest.raises(FileNotFoundError, match="no such file"):
        list_shard_files(str(tmp_path / "missing"))


def test_fsspec_paths(tmp_path):
    path = f"file://{tmp_path}/x.parquet"
    write_table([_row()], path, SHARD_SCHEMA, {"a": 1})
    assert read_shard(path).num_rows == 1
    assert list_shard_files(f"file://{tmp_path}") == [path]


def test_not_a_shard_is_a_clear_error(tmp_path):
    path = str(tmp_path / "other.parquet")
    pq.write_table(pa.table({"x": [1]}), path)
    with pytest.raises(ShardFormatError, match="not a readable GRIT shard") as caught:
        read_shard(path)
    assert caught.value.problems == ("missing column 'key'", "missing column 'caption'")


def test_reject_rows_fit_the_schema(tmp_path):
    row = reject_row("k1", "http://127.0.0.1/x", "a cap", "fetch", "http_404", "HTTP Error 404")
    path = str(tmp_path / "r.parquet")
    write_table([row], path, REJECTS_SCHEMA)
    assert pq.read_table(path).to_pylist() == [row]
    assert json.loads(pq.read_schema(path).metadata.get(PROVENANCE_KEY, b"null")) is None


def test_span_rows_must_have_seven_numbers():
    with pytest.raises(ValueError, match="7 numbers"):
        spans_from_column([[0.0, 1.0, 0.1]])


def _damage_column(path: str, column: str) -> None:
    """Overwrite the bytes of one column's data in a Parquet file, leaving the footer intact."""
    metadata = pq.read_metadata(path)
    index = metadata.schema.to_arrow_schema().get_field_index(column)
    with open(path, "r+b") as handle:
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(index)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            handle.seek(start + 8)  # past the page header's first bytes, well inside the chunk
            handle.write(b"\xff" * (chunk.total_compressed_size // 2))


def test_read_shard_reads_only_the_requested_columns(tmp_path):
    from shard_factory import default_samples, shard_row, write_shard

    path = write_shard(str(tmp_path / "s.parquet"), [shard_row(s) for s in default_samples(3)])
    _damage_column(path, "image")  # a column that is read fails: only one that is not read can be damaged
    table = read_shard(path, ["key", "caption", "grounded_caption"])
    assert table.column_names == ["key", "caption", "grounded_caption"] and table.num_rows == 3
    assert read_shard(path, ["caption", "id"]).column("id").null_count == 3  # a v1 column the file lacks
    with pytest.raises(ShardFormatError, match="cannot read as Parquet"):
        read_shard(path)
    with pytest.raises(ShardFormatError, match="no column 'nope'"):
        read_shard(path, ["key", "nope"])


def test_footer_reads_never_go_through_a_python_file_object(tmp_path, monkeypatch):
    from shard_factory import PROVENANCE, default_samples, shard_row, write_shard

    from grit_pipeline.schemas import read_parquet_metadata, read_parquet_schema

    url = write_shard("memory://footer/s.parquet", [shard_row(s) for s in default_samples(2)])
    # pyarrow's Python-file readers are what aborted processes at exit: make any use of them fail.
    monkeypatch.setattr(pq, "ParquetFile", None)
    assert read_provenance(url) == PROVENANCE
    assert read_parquet_metadata(url).num_rows == 2
    assert "grounded_caption" in read_parquet_schema(url).names


def test_image_bytes_are_looked_up_in_one_order():
    from grit_pipeline.schemas import IMAGE_COLUMNS, image_bytes, image_column

    assert IMAGE_COLUMNS == ("image", "jpg", "jpeg", "png", "webp")  # ours, then img2dataset's names
    assert image_column(["key", "png", "jpg"]) == "jpg" and image_column(["key", "caption"]) is None
    assert image_column(["jpeg"]) == "jpeg"  # one of the two drifted lists lacked it
    assert image_bytes({"image": None, "jpg": b"", "png": b"\x89PNG"}) == b"\x89PNG"  # empty values skipped
    assert image_bytes({"image": b"ours", "jpg": b"theirs"}) == b"ours"
    assert image_bytes({"key": "k"}) is None
