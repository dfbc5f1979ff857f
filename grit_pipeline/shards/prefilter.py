"""Which rows of a table `grit validate` must look at one by one, found with vectorised Arrow/NumPy checks.

A row can be skipped only when none of the row checks could fail on it: its spans pass every span
invariant, its key and sizes are sound, and it has neither a grounded caption nor an image to check.
So on a GRIT-20M file (no grounded caption, no images) only broken rows reach the Python checks,
while on our shards every row does (the grounded caption and image checks are per row anyway).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SIZE_COLUMNS = ("width", "height", "image_width", "image_height")


def _numpy(array) -> np.ndarray:
    return array.to_numpy(zero_copy_only=False)


def suspect_span_rows(column: pa.ChunkedArray, caption_chars: np.ndarray) -> np.ndarray:
    """Rows whose span cell might break a span invariant (a superset of those that do)."""
    rows = len(column)
    outer = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    outer = pc.fill_null(outer, pa.scalar([], outer.type))
    lengths = _numpy(pc.list_value_length(outer)).astype(np.int64)
    row_of_inner = np.repeat(np.arange(rows), lengths)
    inner = outer.flatten()
    well_formed = _numpy(pc.fill_null(pc.equal(pc.list_value_length(inner), 7), False)).astype(bool)
    suspect = np.zeros(rows, dtype=bool)
    suspect[row_of_inner[~well_formed]] = True
    values = _numpy(pc.fill_null(inner.filter(pa.array(well_formed)).flatten(), np.nan)).reshape(-1, 7)
    start, end, x1, y1, x2, y2, score = values.T
    with np.errstate(invalid="ignore"):  # NaN compares False: such rows are suspect through `ok`
        limit = caption_chars[row_of_inner[well_formed]]
        ok = (
            (start == np.floor(start))
            & (end == np.floor(end))
            & (start >= 0)
            & (start < end)
            & (end <= limit)
        )
        ok &= (x1 >= 0) & (x1 < x2) & (x2 <= 1) & (y1 >= 0) & (y1 < y2) & (y2 <= 1)
        ok &= (score >= 0) & (score <= 1)
    suspect[row_of_inner[well_formed][~ok]] = True
    return suspect


def suspect_rows(table: pa.Table) -> np.ndarray:
    """A mask of the rows that might fail ``checks.basic_problems`` (a superset of those that do).

    Needs ``key``, ``caption`` and the span columns; the size columns are checked where present.
    """
    caption_chars = _numpy(pc.fill_null(pc.utf8_length(table["caption"]), -1)).astype(np.int64)
    suspect = caption_chars < 0
    # A bracket, or any non-ASCII character (a look-alike bracket may hide there): ``markup`` decides.
    tags = pc.match_substring_regex(table["caption"], "[<>]|[^\\x00-\\x7f]")
    suspect |= _numpy(pc.fill_null(tags, False)).astype(bool)
    for name in ("noun_chunks", "ref_exps"):
        suspect |= suspect_span_rows(table[name], caption_chars)
    suspect |= _numpy(pc.fill_null(pc.equal(pc.utf8_length(table["key"]), 0), True)).astype(bool)
    for name in SIZE_COLUMNS:
        if name in table.column_names:
            suspect |= _numpy(pc.fill_null(pc.less_equal(table[name], 0), False)).astype(bool)
    return suspect


def rows_to_visit(table: pa.Table, check_grounded_caption: bool) -> np.ndarray:
    """Indices of the rows that need the per-row checks (``checks.row_problems``)."""
    if check_grounded_caption:
        return np.arange(table.num_rows)
    return np.flatnonzero(suspect_rows(table) | _numpy(table["image"].is_valid()).astype(bool))
