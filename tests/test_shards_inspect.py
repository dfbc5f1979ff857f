"""`grit inspect`: counts and distributions against the generated samples, rejects, provenance, plots."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from shard_factory import PROVENANCE, default_samples, write_build_output, write_grit20m

from grit_pipeline.cli import main
from grit_pipeline.shards.stats import Histogram

REJECTS = [("fetch", "http_404"), ("fetch", "http_404"), ("fetch", "timeout"), ("parse", "no_noun_chunk")]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect") / "out"
    write_build_output(str(out), shards=2, rows_per_shard=4, rejects=REJECTS)
    return out


def _inspect_json(capsys, *argv) -> dict:
    assert main(["inspect", *map(str, argv), "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def _expected(samples):
    """What the samples hold, computed from their definitions (not from the shards)."""
    phrases = [p for s in samples for p in s.phrases]
    boxes = [b for p in phrases for b in p.boxes]
    return {
        "spans": len(phrases),
        "boxes": len(boxes),
        "spans_per_caption": [len(s.phrases) for s in samples],
        "boxes_per_span": [len(p.boxes) for p in phrases],
        "area": [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes],
        "scores": [p.score for p in phrases for _ in p.boxes],
        "caption_chars": [len(s.caption) for s in samples],
    }


def test_counts_and_distributions_match_the_samples(build, capsys):
    report = _inspect_json(capsys, build)
    want = _expected(default_samples(8))
    assert (report["files"], report["rows"], report["images"]) == (2, 8, 8)
    assert report["image_bytes"] > 0
    for column in ("ref_exps", "noun_chunks"):
        stats = report["columns"][column]
        assert (stats["rows_with_spans"], stats["spans"], stats["boxes"]) == (8, want["spans"], want["boxes"])
        assert stats["spans_per_caption"]["mean"] == pytest.approx(np.mean(want["spans_per_caption"]))
        assert stats["spans_per_caption"]["max"] == max(want["spans_per_caption"])
        assert stats["boxes_per_span"]["histogram"]["counts"][2] == want["boxes_per_span"].count(2)
        assert stats["box_area"]["mean"] == pytest.approx(np.mean(want["area"]))
        assert stats["score"]["min"] == pytest.approx(min(want["scores"]))
        assert stats["score"]["count"] == want["boxes"]
    captions = report["caption_chars"]
    assert captions["p50"] == np.percentile(want["caption_chars"], 50, method="inverted_cdf")
    assert sum(captions["histogram"]["counts"]) == 8
    # The grounded caption holds every phrase here (no phrase contains another).
    assert report["grounded_phrases"]["mean"] == pytest.approx(np.mean(want["spans_per_caption"]))


def test_rejects_manifest_and_provenance(build, capsys):
    report = _inspect_json(capsys, build / "shards")  # the shards folder: rejects/ sits beside it
    by_reason = {(r["stage"], r["reason"]): r["rows"] for r in report["rejects"]["by_reason"]}
    assert by_reason == Counter(REJECTS)
    assert report["rejects"]["by_stage"] == {"fetch": 3, "parse": 1}
    [manifest] = report["manifests"]
    assert manifest["manifest"]["counts"]["rejected"] == len(REJECTS)
    assert report["provenance"] == [{"provenance": PROVENANCE, "shards": 2}]


def test_table_output(build, capsys):
    assert main(["inspect", str(build / "shards" / "*.parquet"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^rows +8$", out, re.MULTILINE)
    assert "fetch     http_404" in out and "parse     no_noun_chunk" in out
    assert "ref_exps: spans per caption" in out
    assert '"spacy_model": "en_core_web_sm"' in out


def test_grit20m_file(tmp_path, capsys):
    samples = default_samples(5, prefix="g")
    path = write_grit20m(str(tmp_path / "part-00000.parquet"), samples)
    report = _inspect_json(capsys, path)
    assert (report["rows"], report["images"]) == (5, 0)
    assert report["columns"]["ref_exps"]["boxes"] == _expected(samples)["boxes"]
    assert report["grounded_phrases"]["count"] == 0  # GRIT-20M has no grounded caption
    assert report["provenance"] == [{"provenance": None, "shards": 1}]
    assert report["rejects"] is None and report["manifests"] == []


def test_plots_are_pngs(build, tmp_path, capsys):
    report = _inspect_json(capsys, build, "--plots", tmp_path / "plots")
    assert len(report["plots"]) == 5
    for path in report["plots"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (600, 350)
            pixels = np.asarray(image.convert("RGB"))
        # The bars are drawn in tab:blue.
        assert np.any(np.all(pixels == (31, 119, 180), axis=-1)), path


def test_histogram_quantiles():
    counts = Histogram("count")
    counts.add(np.array([1, 1, 2, 5]))
    counts.add(np.array([3]))
    assert counts.summary() == {
        "count": 5,
        "mean": 2.4,
        "min": 1.0,
        "max": 5.0,
        "p50": 2.0,
        "p90": 5.0,
        "p99": 5.0,
    }
    unit = Histogram("unit")
    unit.add(np.array([0.05, 0.5, 0.95, 1.0, np.nan]))
    assert (
        unit.n == 4 and unit.counts[99] == 1 and unit.counts[95] == 1
    )  # 1.0 is in the last bin; NaN is not counted
    assert unit.quantile(0.5) == pytest.approx(0.51)


def test_bad_span_row_is_a_clear_error(tmp_path, capsys):
    from shard_factory import shard_row, write_shard

    row = shard_row(default_samples(1)[0])
    row["ref_exps"] = [[0.0, 5.0, 0.1]]
    write_shard(str(tmp_path / "s.parquet"), [row])
    assert main(["inspect", str(tmp_path), "--quiet"]) == 2
    assert "run `grit validate`" in capsys.readouterr().err


def test_distinct_spans_groups_boxes_of_one_span():
    from grit_pipeline.shards.stats import distinct_spans

    row = np.array([0, 0, 0, 1, 1, 2])
    start = np.array([5.0, 0.0, 5.0, 0.0, 0.0, np.nan])  # row 0: (5, 9) twice, in any order
    end = np.array([9.0, 4.0, 9.0, 4.0, 6.0, 3.0])
    span_rows, boxes = distinct_spans(row, start, end)
    assert span_rows.tolist() == [0, 0, 1, 1, 2]
    assert boxes.tolist() == [1, 2, 1, 1, 1]


def test_fsspec_url_with_rejects_beside(capsys):
    from shard_factory import shard_row, write_shard

    from grit_pipeline.schemas import REJECTS_SCHEMA, reject_row, write_table

    write_shard("memory://inspect/out/shards/shard-0.parquet", [shard_row(s) for s in default_samples(3)])
    rejects = [reject_row("r0", None, "c", "fetch", "http_404")]
    write_table(rejects, "memory://inspect/out/rejects/rejects-0.parquet", REJECTS_SCHEMA)
    report = _inspect_json(capsys, "memory://inspect/out/shards")
    assert report["rows"] == 3
    assert report["rejects"]["by_reason"] == [{"stage": "fetch", "reason": "http_404", "rows": 1}]
