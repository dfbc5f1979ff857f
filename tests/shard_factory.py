"""Generated shards for the tool tests: real PNG/JPEG images (PIL), real Parquet through the real writer.

Each sample is a grey canvas with one filled rectangle per phrase, placed where that phrase's box says,
so drawn boxes can be checked pixel by pixel. ``write_grit20m`` writes the released GRIT-20M layout
instead: start/end as floats, ``id`` and ``clip_similarity_*`` columns, no image or grounded caption.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from grit_pipeline.assemble import grounded_caption
from grit_pipeline.locations import Box
from grit_pipeline.schemas import (
    REJECTS_SCHEMA,
    SHARD_SCHEMA,
    GroundedSpan,
    reject_row,
    spans_to_column,
    write_table,
)

BACKGROUND = (200, 200, 200)
FILLS = [(90, 60, 30), (30, 90, 60), (60, 30, 90), (120, 120, 40)]  # none of them is a palette colour
PROVENANCE = {"pipeline_version": "0.1.0", "spacy_model": "en_core_web_sm", "score_threshold": 0.65}


@dataclass(frozen=True)
class Phrase:
    """A phrase of a generated caption with its boxes (normalised) and score."""

    text: str
    boxes: tuple[tuple[float, float, float, float], ...]
    score: float = 0.8


@dataclass(frozen=True)
class Sample:
    key: str
    caption: str
    phrases: tuple[Phrase, ...]
    width: int = 640  # "original" size, as GRIT-20M records it
    height: int = 480
    image_format: str = "PNG"
    image_scale: float = 0.5  # the stored image is this fraction of the original size
    extra: dict = field(default_factory=dict)


def image_bytes(sample: Sample) -> tuple[bytes, int, int]:
    """The encoded image of a sample and its stored size."""
    width, height = round(sample.width * sample.image_scale), round(sample.height * sample.image_scale)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, phrase in enumerate(sample.phrases):
        for x1, y1, x2, y2 in phrase.boxes:
            draw.rectangle([x1 * width, y1 * height, x2 * width - 1, y2 * height - 1], fill=FILLS[i % 4])
    buffer = io.BytesIO()
    image.save(buffer, format=sample.image_format)
    return buffer.getvalue(), width, height


def spans_of(sample: Sample) -> list[GroundedSpan]:
    spans = []
    for phrase in sample.phrases:
        start = sample.caption.index(phrase.text)
        for box in phrase.boxes:
            spans.append(GroundedSpan(start, start + len(phrase.text), Box(*box), phrase.score))
    return spans


def shard_row(sample: Sample, with_image: bool = True) -> dict:
    """A v1 shard row for a sample, its grounded caption built as the pipeline builds it."""
    spans = spans_of(sample)
    data, width, height = image_bytes(sample) if with_image else (None, None, None)
    return {
        "key": sample.key,
        "url": f"http://127.0.0.1/{sample.key}.png",
        "caption": sample.caption,
        "width": sample.width,
        "height": sample.height,
        "noun_chunks": spans_to_column(spans),
        "ref_exps": spans_to_column(spans),
        "grounded_caption": grounded_caption(sample.caption, spans),
        "image": data,
        "image_width": width,
        "image_height": height,
        "sha256": None,
        **sample.extra,
    }


def default_samples(n: int, prefix: str = "s") -> list[Sample]:
    """``n`` varied samples: one, two or three phrases, one phrase with two boxes, mixed formats."""
    shapes = [
        ("a red square next to a blue circle", [("a red square", [(0.1, 0.1, 0.45, 0.5)], 0.9),
                                                 ("a blue circle", [(0.55, 0.4, 0.9, 0.9)], 0.7)]),
        ("two cats on a sofa", [("two cats", [(0.05, 0.2, 0.3, 0.6), (0.35, 0.2, 0.6, 0.6)], 0.8)]),
        ("a tall tree beside a small house under the sky",
         [("a tall tree", [(0.05, 0.05, 0.3, 0.95)], 0.95), ("a small house", [(0.4, 0.5, 0.8, 0.95)], 0.75),
          ("the sky", [(0.0, 0.0, 1.0, 0.3)], 0.66)]),
    ]  # fmt: skip
    samples = []
    for i in range(n):
        caption, phrases = shapes[i % len(shapes)]
        samples.append(
            Sample(
                key=f"{prefix}{i:05d}",
                caption=caption,
                phrases=tuple(Phrase(t, tuple(b), s) for t, b, s in phrases),
                width=640 if i % 2 == 0 else 480,
                height=480 if i % 2 == 0 else 640,
                image_format="PNG" if i % 3 else "JPEG",
            )
        )
    return samples


def write_shard(path: str, rows: Sequence[dict], provenance: dict | None = PROVENANCE) -> str:
    write_table(rows, path, SHARD_SCHEMA, provenance)
    return path


def write_build_output(
    out_dir: str, shards: int = 2, rows_per_shard: int = 3, rejects: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """A build's output folder: ``shards/``, ``rejects/`` (one row per (stage, reason)) and ``manifest.json``."""
    samples = default_samples(shards * rows_per_shard)
    paths = []
    for s in range(shards):
        rows = [shard_row(x) for x in samples[s * rows_per_shard : (s + 1) * rows_per_shard]]
        paths.append(write_shard(os.path.join(out_dir, "shards", f"shard-{s:05d}.parquet"), rows))
    if rejects:
        reject_rows = [
            reject_row(f"r{i}", None, "c", stage, reason) for i, (stage, reason) in enumerate(rejects)
        ]
        write_table(reject_rows, os.path.join(out_dir, "rejects", "rejects-00000.parquet"), REJECTS_SCHEMA)
        by_reason: dict[str, int] = {}
        for stage, reason in rejects:
            by_reason[f"{stage}/{reason}"] = by_reason.get(f"{stage}/{reason}", 0) + 1
        counts = {"input": len(samples) + len(rejects), "accepted": len(samples), "rejected": len(rejects)}
        with open(os.path.join(out_dir, "manifest.json"), "w") as handle:
            json.dump({"counts": {**counts, "by_reason": by_reason}}, handle)
    return paths


def write_grit20m(path: str, samples: Sequence[Sample]) -> str:
    """A file in the released GRIT-20M layout (its columns only, in its order, no provenance)."""
    rows = []
    for i, sample in enumerate(samples):
        spans = spans_to_column(spans_of(sample))
        rows.append(
            {
                "key": sample.key,
                "id": 1000 + i,
                "url": f"http://127.0.0.1/{sample.key}.jpg",
                "caption": sample.caption,
                "width": sample.width,
                "height": sample.height,
                "clip_similarity_vitb32": 0.31,
                "clip_similarity_vitl14": 0.28,
                "noun_chunks": spans,
                "ref_exps": spans,
            }
        )
    schema = pa.schema([SHARD_SCHEMA.field(name).with_nullable(True) for name in rows[0]])
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path
