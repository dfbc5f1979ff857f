"""Shard schema v1: GRIT-20M's columns with their names, types and meaning, plus our own.

GRIT-20M (zzliang/GRIT) stores ``noun_chunks`` and ``ref_exps`` as ``list<list<float64>>``, one
inner row ``[char_start, char_end, x_min, y_min, x_max, y_max, score]`` per (span, box), boxes
normalised by the original ``width`` and ``height``. We keep exactly that layout (start and end as
floats), so a GRIT-20M file and one of our shards read the same way (docs/grit.md section 2).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

SHARD_SCHEMA_VERSION = 1
# Parquet key-value metadata of our files: which schema and version (``shard/1``), and the run's provenance.
SCHEMA_KEY = b"grit_pipeline.schema"
PROVENANCE_KEY = b"grit_pipeline.provenance"

SPANS_TYPE = pa.list_(pa.list_(pa.float64()))

# The released GRIT-20M columns, in their order.
GRIT20M_COLUMNS: tuple[str, ...] = (
    "key",
    "id",
    "url",
    "caption",
    "width",
    "height",
    "clip_similarity_vitb32",
    "clip_similarity_vitl14",
    "noun_chunks",
    "ref_exps",
)

# Columns that hold encoded image bytes, in the order they are looked for: ours (``image``), then
# img2dataset's parquet/webdataset names. The one list for every reader (the input reader, the trainer).
IMAGE_COLUMNS: tuple[str, ...] = ("image", "jpg", "jpeg", "png", "webp")

SHARD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("id", pa.int64()),  # GRIT-20M's numeric id; passed through when the input has one
        pa.field("url", pa.string()),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("width", pa.int64()),  # original image size, as in GRIT-20M
        pa.field("height", pa.int64()),
        pa.field("clip_similarity_vitb32", pa.float64()),  # COYO metadata, passed through when present
        pa.field("clip_similarity_vitl14", pa.float64()),
        pa.field("noun_chunks", SPANS_TYPE),
        pa.field("ref_exps", SPANS_TYPE),
        # Kosmos-2 text: ref_exps after the containment filter, rendered with location tokens.
        pa.field("grounded_caption", pa.string()),
        pa.field("image", pa.binary()),  # encoded image bytes (JPEG/PNG/WebP), null when not stored
        pa.field("image_width", pa.int64()),  # size of the stored image bytes (after resizing)
        pa.field("image_height", pa.int64()),
        pa.field("sha256", pa.string()),  # hex digest of the downloaded bytes, before resizing
    ],
    metadata={SCHEMA_KEY: f"shard/{SHARD_SCHEMA_VERSION}".encode()},
)


def shard_schema(extra_fields: Sequence[pa.Field] = ()) -> pa.Schema:
    """The v1 schema, followed by pass-through input columns (``--keep-columns``)."""
    clashes = {f.name for f in extra_fields} & set(SHARD_SCHEMA.names)
    if clashes:
        raise ValueError(f"pass-through columns clash with shard columns: {sorted(clashes)}")
    schema = SHARD_SCHEMA
    for field in extra_fields:
        schema = schema.append(field)
    return schema


@dataclass(frozen=True)
class Box:
    """A box in normalised image coordinates: 0 <= x_min < x_max <= 1 for a valid box."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def area(self) -> float:
        return max(0.0, self.x_max - self.x_min) * max(0.0, self.y_max - self.y_min)

    def is_valid(self) -> bool:
        return 0.0 <= self.x_min < self.x_max <= 1.0 and 0.0 <= self.y_min < self.y_max <= 1.0

    def iou(self, other: Box) -> float:
        inter = Box(
            max(self.x_min, other.x_min),
            max(self.y_min, other.y_min),
            min(self.x_max, other.x_max),
            min(self.y_max, other.y_max),
        ).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)


@dataclass(frozen=True)
class GroundedSpan:
    """One inner row of ``noun_chunks`` / ``ref_exps``: a character span, one box and its score."""

    start: int
    end: int
    box: Box
    score: float

    def to_row(self) -> list[float]:
        return [float(self.start), float(self.end), *self.box.as_tuple(), float(self.score)]


def spans_from_column(rows: Iterable[Sequence[float]] | None) -> list[GroundedSpan]:
    """Typed spans from a ``noun_chunks`` / ``ref_exps`` cell (floats for start/end, as GRIT-20M stores them)."""
    spans = []
    for row in rows or ():
        if len(row) != 7:
            raise ValueError(f"a span row has 7 numbers [start, end, x1, y1, x2, y2, score], got {list(row)}")
        start, end, x1, y1, x2, y2, score = row
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (start, end)) or (
            start != int(start) or end != int(end)
        ):  # never truncated: [0.5, 5.5) is no span of whole characters
            raise ValueError(f"a span's start and end must be whole numbers, got [{start}, {end})")
        spans.append(GroundedSpan(int(start), int(end), Box(x1, y1, x2, y2), float(score)))
    return spans


def spans_to_column(spans: Iterable[GroundedSpan]) -> list[list[float]]:
    """The ``list<list<float64>>`` cell for typed spans, sorted by (start, end) as GRIT-20M is."""
    return [s.to_row() for s in sorted(spans, key=lambda s: (s.start, s.end))]


def group_by_span(spans: Iterable[GroundedSpan]) -> dict[tuple[int, int], list[GroundedSpan]]:
    """The spans of each character range ``(start, end)`` (one per box), ranges in caption order."""
    grouped: dict[tuple[int, int], list[GroundedSpan]] = defaultdict(list)
    for span in spans:
        grouped[(span.start, span.end)].append(span)
    return {key: grouped[key] for key in sorted(grouped)}


def image_column(names: Iterable[str]) -> str | None:
    """The first of ``IMAGE_COLUMNS`` among ``names`` (a schema's or a record's), or None."""
    present = set(names)
    return next((name for name in IMAGE_COLUMNS if name in present), None)


def image_bytes(record: dict) -> bytes | None:
    """The image bytes of a record: the first non-empty value among ``IMAGE_COLUMNS``, or None."""
    return next((record[name] for name in IMAGE_COLUMNS if record.get(name)), None)
