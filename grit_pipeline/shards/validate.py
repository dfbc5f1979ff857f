"""`grit validate`: check shards against the schema and every invariant; one line per problem.

Exit status 0 when every shard is valid, 1 when a problem was found (each printed as
``SHARD: row N key K: what is wrong``), 2 for a usage error (no shards under PATH).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grit_pipeline.schemas import ShardFormatError, column_type_problems, read_parquet_schema, read_shard
from grit_pipeline.shards.checks import MAX_PIXELS, REQUIRED_COLUMNS, row_problems, schema_problems
from grit_pipeline.shards.common import (
    count_rows,
    progress,
    resolve_files,
)
from grit_pipeline.shards.guard import BATCH_ROWS, Problem
from grit_pipeline.shards.prefilter import rows_to_visit


def shard_problems(
    path: str, keys: list, on_row=lambda n: None, max_pixels: int = MAX_PIXELS
) -> Iterator[Problem]:
    """Every problem of one shard; its ``key`` column is appended to ``keys`` for the cross-shard check."""
    try:
        schema = read_parquet_schema(path)
    except Exception as err:  # pyarrow raises several types for a damaged or non-Parquet file
        yield Problem(path, f"cannot read as Parquet ({type(err).__name__}: {err})")
        return
    reported = schema_problems(schema)
    yield from (Problem(path, message) for message in reported)
    if any(name not in schema.names for name in REQUIRED_COLUMNS) or column_type_problems(schema):
        return  # without the core columns, or with columns of other types, there are no rows to check
    check_grounded = "grounded_caption" in schema.names  # GRIT-20M files have none
    try:
        table = read_shard(path)
    except ShardFormatError as err:  # e.g. the footer reads but a data page is damaged
        yield from (Problem(path, message) for message in err.problems if message not in reported)
        return
    keys.append((path, table["key"]))
    visit = rows_to_visit(table, check_grounded)
    on_row(table.num_rows - len(visit))  # rows the vectorised checks cleared
    for first in range(0, len(visit), BATCH_ROWS):  # Python objects for one batch at a time
        indices = visit[first : first + BATCH_ROWS]
        for index, row in zip(indices.tolist(), table.take(indices).to_pylist()):
            for message in row_problems(row, check_grounded, max_pixels):
                yield Problem(path, message, index, row.get("key"))
            on_row(1)


def duplicate_keys(keys: list[tuple[str, pa.ChunkedArray]]) -> Iterator[Problem]:
    """Every repeat of a key across all shards (the first occurrence is not a problem).

    Keys are kept as Arrow arrays (about 20 bytes a key), not a Python set, so GRIT-20M-sized
    inputs fit in memory; the duplicates are found in one vectorised pass at the end.
    """
    if not keys:
        return
    column = pa.chunked_array([c for _, c in keys]).combine_chunks()
    counts = pc.value_counts(column.drop_null())
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return
    offsets = np.cumsum([0] + [len(c) for _, c in keys])
    first: dict[str, tuple[str, int]] = {}
    for position in np.flatnonzero(pc.is_in(column, value_set=repeated).to_numpy(zero_copy_only=False)):
        shard = int(np.searchsorted(offsets, position, side="right")) - 1
        key, path, row = column[int(position)].as_py(), keys[shard][0], int(position - offsets[shard])
        if key in first:
            yield Problem(path, f"duplicate key, first seen in {first[key][0]} row {first[key][1]}", row, key)
        else:
            first[key] = (path, row)


def validate(
    path: str, max_errors: int = 0, quiet: bool = True, max_pixels: int = MAX_PIXELS
) -> tuple[list[Problem], int, int]:
    """``(problems, shards, rows checked)`` for the shards under ``path``, stopping at ``max_errors`` (0: never)."""
    files = resolve_files(path)
    keys: list[tuple[str, pa.ChunkedArray]] = []
    problems: list[Problem] = []
    rows = [0]
    bar = progress(count_rows(files), "validate", quiet)

    def on_row(n: int) -> None:
        rows[0] += n
        bar.update(n)

    try:
        for problem in chain.from_iterable(shard_problems(f, keys, on_row, max_pixels) for f in files):
            problems.append(problem)
            if max_errors and len(problems) >= max_errors:
                return problems, len(files), rows[0]
    finally:
        bar.close()
    for problem in duplicate_keys(keys):
        problems.append(problem)
        if max_errors and len(problems) >= max_errors:
            break
    return problems, len(files), rows[0]
