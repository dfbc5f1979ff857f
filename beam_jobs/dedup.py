"""Uniqueness as Beam transforms: one row per key, per URL or per image hash, earlier committed runs included.

Rows are grouped by the value that must be unique; values the committed shards of earlier runs
already hold join each group as an ``EARLIER_RUN`` marker (read from that one column only: its
column chunks and the footer are all that is fetched), so a group holding one has no winner.
Everything else is rejected with the winner's name in the error. By image hash, rows carry their
images, so only (hash, key) pairs are grouped and the losing keys return as a side input
(``DeduplicateByHash``): image bytes never go through a shuffle.
"""

from __future__ import annotations

import apache_beam as beam
import fsspec

from grit_pipeline.beam_jobs.records import REJECTS, Row
from grit_pipeline.inputs import DUPLICATE_KEY
from grit_pipeline.schemas import list_shard_files
from grit_pipeline.schemas.reader import read_parquet


def committed_shards(output: str) -> tuple[str, ...]:
    """The shard files earlier runs committed to OUTPUT (their keys, URLs and hashes stay taken)."""
    fs, root = fsspec.core.url_to_fs(output)
    # The manifest's committed index (never a listing: retried bundles' leftovers are not committed).
    return tuple(list_shard_files(f"{output}/shards")) if fs.exists(f"{root}/shards") else ()


EARLIER_RUN = "\0earlier-run"  # stands in a group for a value a committed shard already holds


class ColumnValuesFn(beam.DoFn):
    """A committed shard file -> (value, EARLIER_RUN) for each non-empty value of one column (only it is read)."""

    def __init__(self, column: str):
        self._column = column

    def process(self, path: str):
        for value in read_parquet(path, columns=[self._column])[self._column].to_pylist():
            if value:
                yield value, EARLIER_RUN


def _earlier(pipeline, label: str, shards: tuple[str, ...], column: str):
    """(value, EARLIER_RUN) pairs of ``column`` in the committed shards, or None when there are none."""
    if not shards:
        return None
    return (
        pipeline
        | f"{label}Shards" >> beam.Create(list(shards))
        | f"{label}Values" >> beam.ParDo(ColumnValuesFn(column))
    )


def _group_with_earlier(keyed, earlier, label: str):
    groups = [keyed] if earlier is None else [keyed, earlier]
    return groups | f"{label}Merge" >> beam.Flatten() | f"{label}Group" >> beam.GroupByKey()


def _unique_keys(item):
    """Rows sharing a key: the first read (file, row) wins unless an earlier run holds the key."""
    key, members = item
    rows = sorted((m for m in members if isinstance(m, Row)), key=lambda r: (r.input.source, r.input.index))
    earlier = len(rows) < len(members)
    winner = None if earlier else rows[0]
    if winner is not None:
        yield winner
    for row in rows[1:] if winner is not None else rows:
        where = (
            "an earlier run's shards" if earlier else f"row {winner.input.index + 1} of {winner.input.source}"
        )
        yield beam.pvalue.TaggedOutput(
            REJECTS, row.reject("read", DUPLICATE_KEY, f"key {key!r} is taken by {where}")
        )


class UniqueKeys(beam.PTransform):
    """Rows -> rows with unique keys (main) and ``duplicate_key`` rejects (stage ``read``)."""

    def __init__(self, earlier_shards: tuple[str, ...] = ()):
        super().__init__()
        self._earlier_shards = tuple(earlier_shards)

    def expand(self, rows):
        keyed = rows | "ByKey" >> beam.Map(lambda row: (row.key, row))
        earlier = _earlier(rows.pipeline, "EarlierKeys", self._earlier_shards, "key")
        return _group_with_earlier(keyed, earlier, "Keys") | "FirstKey" >> beam.FlatMap(
            _unique_keys
        ).with_outputs(REJECTS, main="rows")


def _first_wins(item):
    """One group of rows sharing a URL or a hash: the smallest key stays, the others are duplicates;
    all are duplicates when an earlier committed run already accepted the value."""
    _, members = item
    rows = sorted((m for m in members if isinstance(m, Row)), key=lambda r: r.key)
    earlier = len(rows) < len(members)
    if not earlier:
        yield rows[0]
    for row in rows if earlier else rows[1:]:
        error = (
            "an earlier run accepted the same content" if earlier else f"same content as row {rows[0].key}"
        )
        yield beam.pvalue.TaggedOutput(REJECTS, row.reject("dedup", "duplicate", error))


def _dedup_value(row: Row, field: str) -> str | None:
    """What must be unique: the URL, or for an ``--image-path-column`` row its resolved file (so rows
    naming one file are deduplicated before any of them is read); the file alone (``image_file``),
    or the hash of the bytes (``sha256``)."""
    located = row.input.image_file.path if row.input.image_file is not None else None
    if field == "url":
        return f"file:{located}" if located else row.input.url
    return located if field == "image_file" else row.fetched.sha256


def _dedup_key(field: str):
    def key(row: Row):
        value = _dedup_value(row, field)
        return (value if value else f"\0unique:{row.key}"), row

    return key


class Deduplicate(beam.PTransform):
    """Rows -> rows with one row per URL (or image hash); the rest go to rejects as ``duplicate``,
    and so does every row whose URL (hash) is in ``earlier_shards`` (runs committed before)."""

    def __init__(self, field: str, earlier_shards: tuple[str, ...] = ()):
        super().__init__()
        self._field, self._earlier_shards = field, tuple(earlier_shards)

    def expand(self, rows):
        if self._field == "sha256":
            return rows | "ByHash" >> DeduplicateByHash(self._earlier_shards)
        keyed = rows | "Key" >> beam.Map(_dedup_key(self._field))
        earlier = _earlier(rows.pipeline, "Earlier", self._earlier_shards, self._field)
        return _group_with_earlier(keyed, earlier, "") | "FirstWins" >> beam.FlatMap(
            _first_wins
        ).with_outputs(REJECTS, main="rows")


def _losers(item):
    """(hash, [row keys and EARLIER_RUN markers]) -> (key, error) for each row that is not the winner."""
    _, members = item
    keys = sorted(m for m in members if m != EARLIER_RUN)
    earlier = len(keys) < len(members)
    for key in keys if earlier else keys[1:]:
        yield (
            key,
            ("an earlier run accepted the same content" if earlier else f"same content as row {keys[0]}"),
        )


def _drop_losers(row: Row, losers: dict):
    error = losers.get(row.key)
    if error is None:
        yield row
    else:
        yield beam.pvalue.TaggedOutput(REJECTS, row.reject("dedup", "duplicate", error))


class DeduplicateByHash(beam.PTransform):
    """Fetched rows -> one row per image hash, without moving the images: only (hash, key) pairs are
    grouped; the keys that lose (a smaller key has the same hash, or an earlier run does) come back
    as a side input, and each row is kept or rejected where it is. Rows without a hash stay."""

    def __init__(self, earlier_shards: tuple[str, ...] = ()):
        super().__init__()
        self._earlier_shards = tuple(earlier_shards)

    def expand(self, rows):
        hashes = rows | "Hashes" >> beam.FlatMap(
            lambda row: [(row.fetched.sha256, row.key)] if row.fetched and row.fetched.sha256 else []
        )
        earlier = _earlier(rows.pipeline, "EarlierHashes", self._earlier_shards, "sha256")
        losers = _group_with_earlier(hashes, earlier, "Hash") | "Losers" >> beam.FlatMap(_losers)
        return rows | "DropLosers" >> beam.FlatMap(_drop_losers, beam.pvalue.AsDict(losers)).with_outputs(
            REJECTS, main="rows"
        )
