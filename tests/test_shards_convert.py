"""`grit head` and `grit convert`: outputs read back with their own libraries and the Kosmos-2 TSV layout."""

import ast
import base64
import hashlib
import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image
from shard_factory import default_samples, shard_row, write_build_output, write_grit20m, write_shard

from grit_pipeline.cli import main


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    paths = write_build_output(str(root / "out"), shards=2, rows_per_shard=3)
    rows = [row for path in paths for row in pq.read_table(path).to_pylist()]
    return root, rows


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([*map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_head_prints_rows_without_image_bytes(build, capsys):
    root, rows = build
    code, out, _ = _run(capsys, "head", root / "out", "--n", 4, "--shard-path")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["key"] for r in records] == [r["key"] for r in rows[:4]]  # across the two shards
    for record, row in zip(records, rows):
        assert "image" not in record
        assert record["image_bytes"] == len(row["image"])
        assert record["ref_exps"] == row["ref_exps"] and record["caption"] == row["caption"]
    assert [r["_row"] for r in records] == [0, 1, 2, 0]


def test_head_over_grit20m_and_memory_url(tmp_path, capsys):
    samples = default_samples(3, prefix="g")
    write_grit20m(str(tmp_path / "g.parquet"), samples)
    code, out, _ = _run(capsys, "head", tmp_path / "g.parquet", "--n", 2)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(records) == 2
    assert records[0]["image_bytes"] is None and records[0]["id"] == 1000
    assert records[0]["noun_chunks"][0][:2] == [0.0, 12.0]  # GRIT-20M stores start/end as floats
    write_shard("memory://head/shards/a.parquet", [shard_row(s) for s in samples])
    code, out, _ = _run(capsys, "head", "memory://head/shards", "--n", 1)
    assert code == 0 and json.loads(out)["key"] == "g00000"


def test_kosmos2_tsv(build, tmp_path, capsys):
    root, rows = build
    out = tmp_path / "tsv"
    assert _run(capsys, "convert", root / "out", "--to", "kosmos2-tsv", "--out", out, "--quiet")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.tsv", "shard-00001.tsv"]
    lines = []
    for path in sorted(out.iterdir()):  # read as the Kosmos-2 loader does
        lines += path.read_text(encoding="utf8").strip().split("\n")
    assert len(lines) == len(rows)
    for line, row in zip(lines, rows):
        md5, caption, image_b64, width, height, spans = line.strip().split("\t")
        jpeg = base64.b64decode(image_b64)
        assert md5 == hashlib.md5(jpeg).hexdigest()
        with Image.open(io.BytesIO(jpeg)) as image:
            assert image.format == "JPEG" and image.size == (row["image_width"], row["image_height"])
        assert (caption, int(width), int(height)) == (row["caption"], row["width"], row["height"])
        assert ast.literal_eval(spans) == {"phrase": row["noun_chunks"], "expression_v1": row["ref_exps"]}


def test_kosmos2_tsv_keeps_offsets_when_caption_has_tabs(tmp_path, capsys):
    row = shard_row(default_samples(1)[0])
    row["caption"] = row["caption"].replace(" next ", "\tnext\n")
    write_shard(str(tmp_path / "in" / "s.parquet"), [row])
    assert _run(capsys, "convert", tmp_path / "in", "--to", "kosmos2-tsv", "--out", tmp_path / "tsv")[0] == 0
    fields = (tmp_path / "tsv" / "s.tsv").read_text().rstrip("\n").split("\t")
    # One space per tab or newline: the caption keeps its length, so span offsets still hold.
    assert len(fields) == 6 and fields[1] == default_samples(1)[0].caption


def test_webdataset_loads_with_webdataset(build, tmp_path, capsys):
    import webdataset as wds

    root, rows = build
    out = tmp_path / "wds"
    assert _run(capsys, "convert", root / "out", "--to", "webdataset", "--out", out, "--quiet")[0] == 0
    tars = sorted(str(p) for p in out.glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    for sample, row in zip(samples, rows):
        image = sample.get("jpg") or sample.get("png")
        assert image.size == (row["image_width"], row["image_height"])
        assert sample["json"]["ref_exps"] == row["ref_exps"]
        assert sample["json"]["grounded_caption"] == row["grounded_caption"]
        assert sample["json"]["image_bytes"] == len(row["image"])


def test_hf_dataset_loads_with_load_from_disk(build, tmp_path, capsys):
    from datasets import load_from_disk

    root, rows = build
    out = tmp_path / "hf"
    assert _run(capsys, "convert", root / "out", "--to", "hf-dataset", "--out", out, "--quiet")[0] == 0
    dataset = load_from_disk(str(out))
    assert dataset.num_rows == len(rows)
    assert dataset.column_names[:4] == ["key", "id", "url", "caption"]
    for item, row in zip(dataset, rows):
        assert item["image"].size == (row["image_width"], row["image_height"])  # decoded to PIL
        assert item["noun_chunks"] == row["noun_chunks"] and item["caption"] == row["caption"]


def test_jsonl_with_and_without_images(build, tmp_path, capsys):
    root, rows = build
    assert _run(capsys, "convert", root / "out", "--to", "jsonl", "--out", tmp_path / "a", "--quiet")[0] == 0
    records = [
        json.loads(line) for p in sorted((tmp_path / "a").iterdir()) for line in p.read_text().splitlines()
    ]
    assert [r["key"] for r in records] == [r["key"] for r in rows]
    assert all("image" not in r for r in records)
    argv = ["convert", root / "out", "--to", "jsonl", "--out", tmp_path / "b", "--include-images", "--quiet"]
    assert _run(capsys, *argv)[0] == 0
    first = json.loads((tmp_path / "b" / "shard-00000.jsonl").read_text().splitlines()[0])
    assert base64.b64decode(first["image"]) == rows[0]["image"]


def test_refusals(build, tmp_path, capsys):
    root, _ = build
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    code, _, err = _run(capsys, "convert", root / "out", "--to", "jsonl", "--out", tmp_path / "full")
    assert code == 2 and "is not empty" in err
    write_grit20m(str(tmp_path / "g" / "g.parquet"), default_samples(2, prefix="g"))
    code, _, err = _run(capsys, "convert", tmp_path / "g", "--to", "kosmos2-tsv", "--out", tmp_path / "t")
    assert code == 2 and "skipped 2 no_image" in err
