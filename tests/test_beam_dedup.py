"""The uniqueness transforms on Beam's TestPipeline: first wins, earlier committed runs win over everything."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from grit_pipeline.beam_jobs.dedup import Deduplicate, UniqueKeys
from grit_pipeline.beam_jobs.records import REJECTS, Row
from grit_pipeline.inputs import InputRow


def _row(key: str, url: str, source: str = "a.csv", index: int = 0) -> Row:
    return Row(InputRow(key, url, "a cat", source, index=index))


def _keys(rows):
    return rows | beam.Map(lambda row: row.key)


def _reasons(rejects):
    return rejects | beam.Map(lambda r: (r["key"], r["reason"], r["error"]))


def test_first_row_of_a_key_wins_and_earlier_shards_hold_theirs(tmp_path):
    shard = str(tmp_path / "shard-000000.parquet")
    pq.write_table(pa.table({"key": ["old"], "url": ["http://x/old.jpg"]}), shard)
    rows = [
        _row("k", "http://x/1.jpg", "b.csv", 0),
        _row("k", "http://x/2.jpg", "a.csv", 5),  # a.csv sorts first: this one wins
        _row("old", "http://x/3.jpg"),
        _row("new", "http://x/4.jpg"),
    ]
    with BeamTestPipeline() as p:
        out = p | beam.Create(rows) | UniqueKeys((shard,))
        assert_that(
            out.rows | beam.Map(lambda r: (r.key, r.input.url)),
            equal_to([("k", "http://x/2.jpg"), ("new", "http://x/4.jpg")]),
            label="rows",
        )
        assert_that(
            _reasons(out[REJECTS]),
            equal_to(
                [
                    ("k", "duplicate_key", "key 'k' is taken by row 6 of a.csv"),
                    ("old", "duplicate_key", "key 'old' is taken by an earlier run's shards"),
                ]
            ),
            label="rejects",
        )


def test_urls_an_earlier_run_accepted_are_duplicates(tmp_path):
    shard = str(tmp_path / "shard-000000.parquet")
    pq.write_table(pa.table({"key": ["old"], "url": ["http://x/seen.jpg"]}), shard)
    rows = [_row("a", "http://x/seen.jpg"), _row("b", "http://x/new.jpg"), _row("c", "http://x/new.jpg")]
    with BeamTestPipeline() as p:
        out = p | beam.Create(rows) | Deduplicate("url", (shard,))
        assert_that(_keys(out.rows), equal_to(["b"]), label="rows")
        assert_that(
            _reasons(out[REJECTS]),
            equal_to(
                [
                    ("a", "duplicate", "an earlier run accepted the same content"),
                    ("c", "duplicate", "same content as row b"),
                ]
            ),
            label="rejects",
        )
