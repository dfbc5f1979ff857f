"""`grit synth`: a synthetic grounded corpus of coloured shapes, written as v1 shards.

Each image holds one or more shapes (circle, square, triangle, diamond) in named colours on a
varied background (flat, gradient, noise or stripes); the caption names them and, for two shapes,
their relation ("a red circle to the left of a blue square"). Boxes are exact: a shape covers the
integer pixel rectangle its box stands for. Each shape phrase is both a noun chunk and a referring
expression (not expanded to the whole caption as spaCy would), so every shape keeps its own box
after the containment filter. Images are PNG (lossless), so a box never blurs across a border.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from grit_pipeline.assemble import grounded_caption
from grit_pipeline.locations import Box
from grit_pipeline.schemas.shard import SHARD_SCHEMA, GroundedSpan, spans_to_column

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = ("flat", "gradient", "noise", "stripes")


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic images are drawn."""

    image_size: int = 64  # the shorter side in pixels; small so CPU training sees many samples per minute
    max_aspect: float = 1.0  # > 1 stretches one side by up to this factor (exercises the trainer's crop)
    min_objects: int = 1
    max_objects: int = 2
    min_size_frac: float = 0.15  # shape side as a fraction of the shorter image side
    max_size_frac: float = 0.5

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0 < self.min_size_frac <= self.max_size_frac <= 1:
            raise ValueError(
                f"need 0 < min_size_frac <= max_size_frac <= 1, got {self.min_size_frac}, {self.max_size_frac}"
            )
        if self.max_aspect < 1:
            raise ValueError(f"max_aspect must be >= 1, got {self.max_aspect}")


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its words and its exact pixel rectangle [x0, x1) x [y0, y1)."""

    colour: str
    kind: str
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def phrase(self) -> str:
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.kind}"

    def box(self, width: int, height: int) -> Box:
        return Box(self.x0 / width, self.y0 / height, self.x1 / width, self.y1 / height)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An (height, width, 3) uint8 background, muted so shapes stand out."""
    base = rng.integers(70, 190, 3).astype(np.float32)
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    image = np.broadcast_to(base, (height, width, 3)).copy()
    if kind == "gradient":
        other = rng.integers(70, 190, 3).astype(np.float32)
        if rng.random() < 0.5:
            t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        else:
            t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        image = base * (1 - t) + other * t + np.zeros_like(image)
    elif kind == "noise":
        image += rng.normal(0, 18, image.shape).astype(np.float32)
    elif kind == "stripes":
        period = int(rng.integers(4, 12))
        stripes = (np.arange(width) // period) % 2 == 0
        image[:, stripes] += 25
    return np.clip(image, 0, 255).astype(np.uint8)


def _place(
    rng: np.random.Generator, width: int, height: int, size: int, placed: list[Shape]
) -> tuple[int, int]:
    """Top-left corner for a square of ``size`` pixels, avoiding overlap with ``placed`` when it can."""
    for _ in range(20):
        x0, y0 = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        if all(x0 >= s.x1 or x0 + size <= s.x0 or y0 >= s.y1 or y0 + size <= s.y0 for s in placed):
            break
    return x0, y0


def _draw(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    # PIL's outline coordinates are inclusive, hence the -1: the shape covers exactly [x0, x1) x [y0, y1).
    x0, y0, x1, y1 = shape.x0, shape.y0, shape.x1 - 1, shape.y1 - 1
    fill = COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)


def _relation(first: Shape, second: Shape) -> str:
    """Where ``first`` is relative to ``second``, by the larger offset between their centres."""
    dx = (first.x0 + first.x1 - second.x0 - second.x1) / 2
    dy = (first.y0 + first.y1 - second.y0 - second.y1) / 2
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _caption(shapes: list[Shape]) -> tuple[str, list[tuple[int, int]]]:
    """The caption and the character span of each shape's phrase."""
    if len(shapes) == 2:
        parts = [shapes[0].phrase, f" {_relation(shapes[0], shapes[1])} ", shapes[1].phrase]
    else:
        parts = [shapes[0].phrase]
        for shape in shapes[1:]:
            parts += [" and " if shape is shapes[-1] else ", ", shape.phrase]
    caption, spans, cursor = "", [], 0
    for index, part in enumerate(parts):
        if index % 2 == 0:
            spans.append((cursor, cursor + len(part)))
        caption += part
        cursor += len(part)
    return caption, spans


def draw_scene(rng: np.random.Generator, config: SynthConfig) -> tuple[Image.Image, list[Shape]]:
    """One image and its shapes."""
    short = config.image_size
    long = round(float(short * rng.uniform(1.0, config.max_aspect)))
    width, height = (long, short) if rng.random() < 0.5 else (short, long)
    image = Image.fromarray(_background(rng, width, height))
    draw = ImageDraw.Draw(image)
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(config.min_objects, config.max_objects + 1))):
        size = round(float(short * rng.uniform(config.min_size_frac, config.max_size_frac)))
        size = max(size, 3)
        x0, y0 = _place(rng, width, height, size, shapes)
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        shape = Shape(colour, SHAPES[int(rng.integers(len(SHAPES)))], x0, y0, x0 + size, y0 + size)
        _draw(draw, shape)
        shapes.append(shape)
    return image, shapes


def synth_row(rng: np.random.Generator, config: SynthConfig, key: str) -> dict:
    """One shard row (v1 schema) for a freshly drawn scene."""
    image, shapes = draw_scene(rng, config)
    caption, char_spans = _caption(shapes)
    spans = [
        GroundedSpan(start, end, shape.box(image.width, image.height), 1.0)
        for (start, end), shape in zip(char_spans, shapes)
    ]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    return {
        "key": key,
        "caption": caption,
        "width": image.width,
        "height": image.height,
        "noun_chunks": spans_to_column(spans),
        "ref_exps": spans_to_column(spans),
        "grounded_caption": grounded_caption(caption, spans),
        "image": data,
        "image_width": image.width,
        "image_height": image.height,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def iter_synth_rows(n: int, seed: int, config: SynthConfig) -> Iterator[dict]:
    """``n`` rows, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    for index in range(n):
        yield synth_row(rng, config, f"synth-{seed}-{index:08d}")


def write_synth(out: str, n: int, seed: int, config: SynthConfig, rows_per_shard: int = 5000) -> list[str]:
    """Write ``n`` rows as shards ``synth-NNNNN.parquet`` under ``out``; returns their paths."""
    from tqdm import tqdm

    from grit_pipeline.schemas.writer import write_table

    provenance = {"generator": "grit synth", "seed": seed, "rows": n, **asdict(config)}
    paths, rows = [], []
    for row in tqdm(iter_synth_rows(n, seed, config), total=n, desc="synth", unit="img", mininterval=1.0):
        rows.append(row)
        if len(rows) == rows_per_shard:
            paths.append(_flush(out, len(paths), rows, provenance, write_table))
            rows = []
    if rows:
        paths.append(_flush(out, len(paths), rows, provenance, write_table))
    return paths


def _flush(out: str, index: int, rows: list[dict], provenance: dict, write_table) -> str:
    path = f"{out.rstrip('/')}/synth-{index:05d}.parquet"
    write_table(rows, path, SHARD_SCHEMA, provenance)
    return path
