"""`grit validate`: valid inputs pass; each invariant has a row that breaks it and is reported."""

import io
import math
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from shard_factory import (
    default_samples,
    shard_row,
    write_build_output,
    write_grit20m,
    write_shard,
)

from grit_pipeline.cli import main
from grit_pipeline.schemas import GRIT20M_COLUMNS, SHARD_SCHEMA, read_shard, write_table
from grit_pipeline.shards.prefilter import rows_to_visit


def _validate(capsys, *argv) -> tuple[int, list[str], str]:
    code = main(["validate", *map(str, argv), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_build_output_and_grit20m_are_valid(tmp_path, capsys):
    write_build_output(str(tmp_path / "out"), shards=2, rows_per_shard=3, rejects=[("fetch", "http_404")])
    write_grit20m(str(tmp_path / "out" / "grit" / "part-0.parquet"), default_samples(4, prefix="g"))
    code, lines, _ = _validate(capsys, tmp_path / "out")  # a folder: shards/ and grit/, rejects/ left out
    assert code == 0, lines
    assert lines == ["valid: 10 rows in 3 shard(s)"]


def test_glob_and_fsspec_url(tmp_path, capsys):
    write_build_output(str(tmp_path / "out"), shards=2, rows_per_shard=2)
    assert _validate(capsys, f"{tmp_path}/out/shards/*.parquet")[1] == ["valid: 4 rows in 2 shard(s)"]
    write_shard("memory://validate/shards/a.parquet", [shard_row(s) for s in default_samples(3)])
    assert _validate(capsys, "memory://validate/shards")[1] == ["valid: 3 rows in 1 shard(s)"]


def _span_row(values):
    """A good row whose first ref_exps/noun_chunks entry is replaced by ``values``."""
    row = shard_row(default_samples(1, prefix="bad")[0])
    row["ref_exps"] = [values, *row["ref_exps"][1:]]
    row["noun_chunks"] = [values, *row["noun_chunks"][1:]]
    return row


def _png(width, height) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _with(**changes):
    def make():
        row = shard_row(default_samples(1, prefix="bad")[0])
        row.update({k: (v(row) if callable(v) else v) for k, v in changes.items()})
        return row

    return make


# One row per invariant: (id, row factory, expected message pattern).
BROKEN_ROWS = [
    ("span-past-caption-end", lambda: _span_row([0.0, 99.0, 0.1, 0.1, 0.5, 0.5, 0.9]), r"span \[0.0, 99.0\) .* caption"),
    ("span-empty", lambda: _span_row([5.0, 5.0, 0.1, 0.1, 0.5, 0.5, 0.9]), r"span \[5.0, 5.0\) is not a non-empty"),
    ("span-negative-start", lambda: _span_row([-1.0, 5.0, 0.1, 0.1, 0.5, 0.5, 0.9]), r"span \[-1.0, 5.0\)"),
    ("span-fractional", lambda: _span_row([0.5, 5.0, 0.1, 0.1, 0.5, 0.5, 0.9]), r"integer range"),
    ("span-six-numbers", lambda: _span_row([0.0, 5.0, 0.1, 0.1, 0.5, 0.9]), r"expected \[start, end, x1"),
    ("x1-not-below-x2", lambda: _span_row([0.0, 5.0, 0.5, 0.1, 0.5, 0.5, 0.9]), r"box .* breaks 0 <= x1 < x2"),
    ("x2-above-1", lambda: _span_row([0.0, 5.0, 0.1, 0.1, 1.2, 0.5, 0.9]), r"box \(0.1, 0.1, 1.2, 0.5\)"),
    ("y1-negative", lambda: _span_row([0.0, 5.0, 0.1, -0.1, 0.5, 0.5, 0.9]), r"box \(0.1, -0.1, 0.5, 0.5\)"),
    ("y1-above-y2", lambda: _span_row([0.0, 5.0, 0.1, 0.6, 0.5, 0.5, 0.9]), r"box \(0.1, 0.6, 0.5, 0.5\)"),
    ("score-above-1", lambda: _span_row([0.0, 5.0, 0.1, 0.1, 0.5, 0.5, 1.5]), r"score 1.5 outside \[0, 1\]"),
    ("score-negative", lambda: _span_row([0.0, 5.0, 0.1, 0.1, 0.5, 0.5, -0.2]), r"score -0.2 outside"),
    ("score-nan", lambda: _span_row([0.0, 5.0, 0.1, 0.1, 0.5, 0.5, math.nan]), r"null, NaN or infinite"),
    ("key-empty", _with(key=""), r"key is null or empty"),
    ("width-zero", _with(width=0), r"width is 0, expected a positive size"),
    ("grounded-caption-null", _with(grounded_caption=None), r"grounded_caption is null"),
    (
        "grounded-caption-other-text",
        _with(grounded_caption=lambda r: r["grounded_caption"].replace("next to", "far from")),
        r"grounded_caption's text .* is not the caption",
    ),
    (
        "grounded-caption-missing-phrase",
        _with(grounded_caption=lambda r: re.sub(r"<phrase>a blue circle</phrase><object>.*?</object>", "a blue circle", r["grounded_caption"])),
        r"grounded_caption holds phrases \[\('a red square', \(0, 12\)\)\], ref_exps after containment give",
    ),
    (
        "grounded-caption-box-moved",
        _with(grounded_caption=lambda r: r["grounded_caption"].replace("<patch_index_0099>", "<patch_index_0105>", 1)),
        r"grounded_caption boxes of 'a red square' .* not within one cell",
    ),
    (
        "grounded-caption-without-containment",
        # ref_exps gain the whole caption (it contains both phrases): the grounded caption must then hold
        # only that span, as assemble.grounded_caption writes it; the stored one still has the two phrases.
        _with(ref_exps=lambda r: [[0.0, 34.0, 0.05, 0.05, 0.95, 0.95, 0.9], *r["ref_exps"]]),
        r"ref_exps after containment give \[\('a red square next to a blue circle', \(0, 34\)\)\]",
    ),
    ("image-undecodable", _with(image=b"\x89PNG\r\n\x1a\nnot really"), r"image does not decode"),
    ("image-size-not-recorded-size", _with(image=lambda r: _png(100, 75)), r"image is 100x75, image_width/image_height record 320x240"),
    (
        "image-aspect-not-original",
        _with(image=lambda r: _png(320, 320), image_height=320),
        r"image is 320x320, not the aspect of the original 640x480",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    "make_row, pattern", [(m, p) for _, m, p in BROKEN_ROWS], ids=[i for i, _, _ in BROKEN_ROWS]
)
def test_each_broken_invariant_is_reported_with_shard_row_and_key(tmp_path, capsys, make_row, pattern):
    good = shard_row(default_samples(3)[2])
    shard = write_shard(str(tmp_path / "shards" / "s.parquet"), [good, make_row()])
    code, lines, err = _validate(capsys, tmp_path / "shards")
    assert code == 1
    assert lines, "a broken row must produce a problem line"
    for line in lines:  # every problem names the shard, the broken row (row 1) and its key
        assert line.startswith(f"{shard}: row 1 key "), line
    assert any(re.search(pattern, line) for line in lines), lines
    assert "invalid:" in err


# The rows whose breakage does not involve the grounded caption or the image: in a GRIT-20M-layout file
# they must get past the vectorised prefilter (which skips rows it proves sound) to the row checks.
GRIT20M_CASES = [case for case in BROKEN_ROWS if not case[0].startswith(("grounded-", "image-"))]


@pytest.mark.parametrize(
    "make_row, pattern", [(m, p) for _, m, p in GRIT20M_CASES], ids=[i for i, _, _ in GRIT20M_CASES]
)
def test_each_broken_span_invariant_is_reported_in_grit20m_layout(tmp_path, capsys, make_row, pattern):
    rows = [shard_row(default_samples(3)[2]), make_row()]
    schema = pa.schema([SHARD_SCHEMA.field(name).with_nullable(True) for name in GRIT20M_COLUMNS])
    path = tmp_path / "part-00000.parquet"
    pq.write_table(
        pa.Table.from_pylist([{c: r.get(c) for c in GRIT20M_COLUMNS} for r in rows], schema=schema), path
    )
    code, lines, _ = _validate(capsys, path)
    assert code == 1
    assert all(line.startswith(f"{path}: row 1 key ") for line in lines), lines
    assert any(re.search(pattern, line) for line in lines), lines


def test_prefilter_skips_sound_grit20m_rows(tmp_path):
    path = write_grit20m(str(tmp_path / "g.parquet"), default_samples(50, prefix="g"))
    table = read_shard(path)
    assert rows_to_visit(table, check_grounded_caption=False).size == 0
    assert rows_to_visit(table, check_grounded_caption=True).size == 50


def test_grounded_caption_within_one_cell_is_accepted(tmp_path, capsys):
    # Boxes that move by less than a cell (1/32) render to the same tokens or a neighbour: still valid.
    row = shard_row(default_samples(1)[0])
    row["ref_exps"] = [
        [*r[:2], r[2] + 0.01, r[3] + 0.01, r[4] + 0.01, r[5] - 0.01, r[6]] for r in row["ref_exps"]
    ]
    write_shard(str(tmp_path / "s.parquet"), [row])
    assert _validate(capsys, tmp_path / "s.parquet")[0] == 0


def test_duplicate_key_across_shards(tmp_path, capsys):
    samples = default_samples(3)
    first = write_shard(str(tmp_path / "a.parquet"), [shard_row(s) for s in samples[:2]])
    second = write_shard(str(tmp_path / "b.parquet"), [shard_row(samples[2]), shard_row(samples[1])])
    code, lines, _ = _validate(capsys, tmp_path)
    assert code == 1
    assert lines == [f"{second}: row 1 key 's00001': duplicate key, first seen in {first} row 1"]


def test_schema_problems(tmp_path, capsys):
    rows = [shard_row(s) for s in default_samples(2)]
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    missing = tmp_path / "missing.parquet"  # declares shard/1 but lacks grounded_caption
    pq.write_table(table.drop_columns(["grounded_caption"]), missing)
    wrong_type = tmp_path / "wrong_type.parquet"
    pq.write_table(table.set_column(4, "width", pa.array(["640", "480"])), wrong_type)
    other_version = tmp_path / "v9.parquet"
    pq.write_table(table.replace_schema_metadata({b"grit_pipeline.schema": b"shard/9"}), other_version)
    not_parquet = tmp_path / "junk.parquet"
    not_parquet.write_bytes(b"this is not parquet")
    code, lines, _ = _validate(capsys, tmp_path)
    assert code == 1
    assert f"{missing}: missing columns ['grounded_caption']" in lines
    assert f"{wrong_type}: column 'width' has type string, expected int64" in lines
    assert f"{other_version}: schema version 'shard/9', this tool reads 'shard/1'" in lines
    assert any(line.startswith(f"{not_parquet}: cannot read as Parquet") for line in lines)


def test_max_errors_stops_early(tmp_path, capsys):
    rows = []
    for i, sample in enumerate(default_samples(6)):
        row = shard_row(sample)
        row["width"] = -i - 1
        rows.append(row)
    write_table(rows, str(tmp_path / "s.parquet"), SHARD_SCHEMA)
    code, lines, err = _validate(capsys, tmp_path, "--max-errors", 2)
    assert code == 1
    assert len(lines) == 2
    assert "stopped at --max-errors 2" in err
    code, lines, _ = _validate(capsys, tmp_path, "--max-errors", 0)
    assert len(lines) == 6


def test_missing_path_is_a_usage_error(tmp_path, capsys):
    code, _, err = _validate(capsys, tmp_path / "nothing-here")
    assert code == 2
    assert "no such file, folder or glob" in err
