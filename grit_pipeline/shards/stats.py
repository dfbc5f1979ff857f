"""Summary statistics of shards, accumulated one Arrow table at a time (vectorised, constant memory).

Distributions are kept as histograms, not as every value, so 20M rows and 100M boxes fit in a few
kilobytes: counts (spans per caption, boxes per span, caption length) exactly, one bin per integer;
values in [0, 1] (box area, score) in 100 bins, so their quantiles are exact to 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UNIT_BINS = 100  # bins over [0, 1] for box area and score: quantiles to within 0.01
QUANTILES = (0.5, 0.9, 0.99)


class Histogram:
    """A streaming histogram: integer counts (``kind='count'``) or values in [0, 1] (``kind='unit'``)."""

    def __init__(self, kind: str):
        if kind not in ("count", "unit"):
            raise ValueError(f"kind is 'count' or 'unit', got {kind!r}")
        self.kind = kind
        self.counts = np.zeros(UNIT_BINS if kind == "unit" else 1, dtype=np.int64)
        self.n, self.total = 0, 0.0
        self.min, self.max = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]  # NaN scores or areas are `grit validate`'s business
        if values.size == 0:
            return
        self.n += values.size
        self.total += float(values.sum())
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))
        if self.kind == "unit":
            bins = np.clip((values * UNIT_BINS).astype(np.int64), 0, UNIT_BINS - 1)
            self.counts += np.bincount(bins, minlength=UNIT_BINS)
        else:
            grown = np.bincount(np.clip(values, 0, None).astype(np.int64))
            size = max(grown.size, self.counts.size)
            self.counts = np.pad(self.counts, (0, size - self.counts.size)) + np.pad(
                grown, (0, size - grown.size)
            )

    def edges(self) -> np.ndarray:
        """Bin edges: ``len(counts) + 1`` values."""
        if self.kind == "unit":
            return np.linspace(0.0, 1.0, UNIT_BINS + 1)
        return np.arange(self.counts.size + 1, dtype=np.float64)

    def quantile(self, q: float) -> float | None:
        """The smallest bin value at or above the q-th fraction of values (a bin's upper edge for 'unit')."""
        if self.n == 0:
            return None
        index = int(np.searchsorted(np.cumsum(self.counts), q * self.n, side="left"))
        if self.kind == "unit":
            return min(float(self.edges()[index + 1]), self.max)
        return float(index)

    def summary(self) -> dict:
        if self.n == 0:
            return {"count": 0}
        out = {"count": self.n, "mean": self.total / self.n, "min": self.min, "max": self.max}
        out.update({f"p{round(q * 100)}": self.quantile(q) for q in QUANTILES})
        return out

    def to_dict(self) -> dict:
        return {
            **self.summary(),
            "histogram": {"edges": self.edges().tolist(), "counts": self.counts.tolist()},
        }


@dataclass(frozen=True)
class SpanArrays:
    """One ``noun_chunks``/``ref_exps`` column of a table as flat arrays: one entry per (span, box)."""

    row: np.ndarray  # (boxes,) row index within the table
    values: np.ndarray  # (boxes, 7): start, end, x1, y1, x2, y2, score
    boxes_per_row: np.ndarray  # (rows,)


def span_arrays(column: pa.ChunkedArray) -> SpanArrays:
    """Flatten a ``list<list<float64>>`` column; a ValueError when an inner row is not 7 numbers."""
    outer = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    outer = pc.fill_null(outer, pa.scalar([], outer.type))
    lengths = pc.list_value_length(outer).to_numpy(zero_copy_only=False).astype(np.int64)
    inner = outer.flatten()
    inner_lengths = pc.list_value_length(inner).to_numpy(zero_copy_only=False)
    if inner_lengths.size and (np.any(inner_lengths != 7) or inner.null_count):
        raise ValueError(
            "a span row is not [start, end, x1, y1, x2, y2, score]; run `grit validate` to find it"
        )
    values = pc.fill_null(inner.flatten(), float("nan")).to_numpy(zero_copy_only=False).reshape(-1, 7)
    row = np.repeat(np.arange(lengths.size), lengths)
    return SpanArrays(row=row, values=values, boxes_per_row=lengths)


def distinct_spans(row: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row of each distinct (row, start, end) and how many entries (boxes) share it.

    The triple is packed into one int64 so one 1-D sort does the work (``np.unique(axis=0)`` is
    several times slower); offsets outside [-1, longest caption] are clipped, which only merges
    spans `grit validate` reports as broken anyway.
    """
    if row.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    finite = np.isfinite(start) & np.isfinite(end)
    limit = int(max(np.max(start[finite], initial=0), np.max(end[finite], initial=0))) + 2

    def offset(values: np.ndarray) -> np.ndarray:
        clean = np.nan_to_num(values, nan=-1.0, posinf=limit, neginf=-1.0)
        return np.clip(clean, -1, limit - 2).astype(np.int64) + 1

    if (int(row.max()) + 1) * limit * limit >= 2**62:  # absurd offsets: fall back to the slow exact way
        unique, counts = np.unique(np.stack([row, start, end], axis=1), axis=0, return_counts=True)
        return unique[:, 0].astype(np.int64), counts
    packed = (row.astype(np.int64) * limit + offset(start)) * limit + offset(end)
    unique, counts = np.unique(packed, return_counts=True)
    return unique // (limit * limit), counts


class ColumnStats:
    """Counts and distributions of one span column (``noun_chunks`` or ``ref_exps``)."""

    def __init__(self):
        self.rows_with_spans = 0
        self.spans, self.boxes = 0, 0
        self.spans_per_caption = Histogram("count")
        self.boxes_per_span = Histogram("count")
        self.box_area = Histogram("unit")
        self.score = Histogram("unit")

    def add(self, column: pa.ChunkedArray) -> None:
        arrays = span_arrays(column)
        values, rows = arrays.values, arrays.boxes_per_row.size
        # A span is a distinct (row, start, end); one span may carry several boxes.
        span_rows, boxes_per_span = distinct_spans(arrays.row, values[:, 0], values[:, 1])
        spans_per_row = np.bincount(span_rows, minlength=rows)
        self.rows_with_spans += int(np.count_nonzero(arrays.boxes_per_row))
        self.spans += len(span_rows)
        self.boxes += len(values)
        self.spans_per_caption.add(spans_per_row)
        self.boxes_per_span.add(np.asarray(boxes_per_span))
        width, height = values[:, 4] - values[:, 2], values[:, 5] - values[:, 3]
        self.box_area.add(np.clip(width, 0, None) * np.clip(height, 0, None))
        self.score.add(values[:, 6])

    def to_dict(self) -> dict:
        return {
            "rows_with_spans": self.rows_with_spans,
            "spans": self.spans,
            "boxes": self.boxes,
            "spans_per_caption": self.spans_per_caption.to_dict(),
            "boxes_per_span": self.boxes_per_span.to_dict(),
            "box_area": self.box_area.to_dict(),
            "score": self.score.to_dict(),
        }


class ShardStats:
    """Everything `grit inspect` counts, fed one shard table at a time."""

    def __init__(self):
        self.files, self.rows, self.images, self.image_bytes = 0, 0, 0, 0
        self.caption_chars = Histogram("count")
        self.grounded_phrases = Histogram("count")  # phrases per grounded caption (after containment)
        self.columns = {"noun_chunks": ColumnStats(), "ref_exps": ColumnStats()}

    def add(self, table: pa.Table) -> None:
        self.files += 1
        self.rows += table.num_rows
        images = table["image"]
        self.images += table.num_rows - images.null_count
        self.image_bytes += int(pc.sum(pc.binary_length(images)).as_py() or 0)
        self.caption_chars.add(pc.utf8_length(table["caption"]).to_numpy(zero_copy_only=False))
        grounded = table["grounded_caption"].drop_null()
        self.grounded_phrases.add(pc.count_substring(grounded, "<phrase>").to_numpy(zero_copy_only=False))
        for name, stats in self.columns.items():
            stats.add(table[name])

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "rows": self.rows,
            "images": self.images,
            "image_bytes": self.image_bytes,
            "caption_chars": self.caption_chars.to_dict(),
            "grounded_phrases": self.grounded_phrases.to_dict(),
            "columns": {name: stats.to_dict() for name, stats in self.columns.items()},
        }
