"""Boxes and phrase labels drawn on an image, one colour per phrase, and a legend with the phrase text.

Pure PIL; shared by `grit show` and anything else that draws grounded phrases (e.g. a prediction).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from grit_pipeline.locations import Box
from grit_pipeline.schemas import GroundedSpan, group_by_span

# Matplotlib's tab10 without its grey: distinct on photos and told apart in the legend.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
)
LABEL_CHARS = 32  # longer phrases are cut on the image; the legend carries the full text


@dataclass(frozen=True)
class Phrase:
    """A phrase of a caption with its boxes and the colour it is drawn in."""

    text: str
    start: int
    end: int
    boxes: tuple[Box, ...]
    scores: tuple[float, ...]
    colour: tuple[int, int, int]


def phrases_of(caption: str, spans: Iterable[GroundedSpan]) -> list[Phrase]:
    """Spans grouped into phrases (one per character range, in caption order), each with its colour."""
    phrases = []
    for i, ((start, end), group) in enumerate(group_by_span(spans).items()):
        phrases.append(
            Phrase(
                text=caption[start:end],
                start=start,
                end=end,
                boxes=tuple(s.box for s in group),
                scores=tuple(s.score for s in group),
                colour=PALETTE[i % len(PALETTE)],
            )
        )
    return phrases


def phrases_from_entities(
    entities: Iterable[tuple], scores: Iterable[Sequence[float]] | None = None
) -> list[Phrase]:
    """``(name, (start, end), boxes)`` entities, as ``parse_grounded_caption`` returns them, as Phrases.

    ``boxes`` are normalised ``(x1, y1, x2, y2)``; ``scores``, when given, holds one list per entity.
    """
    score_lists = list(scores) if scores is not None else None
    return [
        Phrase(
            text=name,
            start=start,
            end=end,
            boxes=tuple(Box(*box) for box in boxes),
            scores=tuple(score_lists[i]) if score_lists is not None else (),
            colour=PALETTE[i % len(PALETTE)],
        )
        for i, (name, (start, end), boxes) in enumerate(entities)
    ]


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont:
    """PIL's bundled font at ``size`` pixels (a bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background``."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def fit(image: Image.Image, size: int) -> Image.Image:
    """The image in RGB with its longer side scaled to ``size`` pixels (up or down), aspect kept."""
    scale = size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(target, Image.Resampling.BICUBIC)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_position(box, text_size, placed, canvas_size, line) -> tuple[float, float]:
    """Above the box (inside it at the top edge), moved down past labels already placed."""
    (text_w, text_h), (width, height) = text_size, canvas_size
    x = min(max(0.0, box[0]), max(0.0, width - text_w))
    y = box[1] - text_h if box[1] - text_h >= 0 else box[1] + line
    for _ in range(len(placed) + 1):
        hit = next((p for p in placed if _overlaps((x, y, x + text_w, y + text_h), p)), None)
        if hit is None:
            break
        y = hit[3]
    return x, min(y, max(0.0, height - text_h))


def ordered(box: Box) -> Box:
    """The box with its corners in order (a model can generate the lower-right cell first), clamped
    to the image: the one normalisation every drawing goes through."""
    x1, x2 = sorted((min(max(box.x_min, 0.0), 1.0), min(max(box.x_max, 0.0), 1.0)))
    y1, y2 = sorted((min(max(box.y_min, 0.0), 1.0), min(max(box.y_max, 0.0), 1.0)))
    return Box(x1, y1, x2, y2)


def pixel_corners(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    """PIL's inclusive rectangle of a normalised box on a ``width`` x ``height`` canvas (never inverted,
    at least one pixel, which a degenerate box would otherwise break)."""
    box = ordered(box)
    x0, y0 = box.x_min * width, box.y_min * height
    return x0, y0, max(x0, box.x_max * width - 1), max(y0, box.y_max * height - 1)


def draw_boxes(image: Image.Image, phrases: Sequence[Phrase], size: int = 384) -> Image.Image:
    """A copy of ``image`` fitted to ``size`` with every phrase's boxes and a label at each box's corner."""
    canvas = fit(image, size)
    draw = ImageDraw.Draw(canvas)
    line = max(2, round(size / 160))
    label_font = font(max(10, size // 28))
    width, height = canvas.size
    for phrase in phrases:  # every outline first, so labels are never drawn over by a later box
        for box in phrase.boxes:
            draw.rectangle(pixel_corners(box, width, height), outline=phrase.colour, width=line)
    placed: list[tuple[float, float, float, float]] = []
    for phrase in phrases:
        label = phrase.text if len(phrase.text) <= LABEL_CHARS else phrase.text[: LABEL_CHARS - 1] + "…"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=label_font)
        text_size = (right - left + 4, bottom - top + 4)
        for box in map(ordered, phrase.boxes):
            corner = (box.x_min * width, box.y_min * height)
            x, y = _label_position(corner, text_size, placed, canvas.size, line)
            placed.append((x, y, x + text_size[0], y + text_size[1]))
            draw.rectangle(placed[-1], fill=phrase.colour)
            draw.text((x + 2 - left, y + 2 - top), label, fill=text_colour(phrase.colour), font=label_font)
    return canvas


def draw_legend(phrases: Sequence[Phrase], width: int, caption: str | None = None) -> Image.Image:
    """A white panel ``width`` pixels wide: the caption, then a colour swatch and the full text per phrase."""
    legend_font = font(max(10, width // 30))
    line_h = legend_font.getbbox("Ag")[3] + 4
    indent = line_h + 2  # phrase lines start after their swatch
    sample = "abcdefghijklmnopqrstuvwxyz "
    char_w = legend_font.getlength(sample) / len(sample) if hasattr(legend_font, "getlength") else 6.0
    chars = max(10, int((width - 12) / char_w))
    lines: list[tuple[tuple[int, int, int] | None, int, str]] = []
    for text in textwrap.wrap(caption or "", chars):
        lines.append((None, 0, text))
    for phrase in phrases:
        boxes = f" ({len(phrase.boxes)} boxes)" if len(phrase.boxes) > 1 else ""
        wrapped = textwrap.wrap(phrase.text + boxes, chars - int(indent / char_w) - 1) or [""]
        lines += [(phrase.colour if i == 0 else None, indent, t) for i, t in enumerate(wrapped)]
    panel = Image.new("RGB", (width, line_h * len(lines) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, (colour, x, text) in enumerate(lines):
        y = 4 + i * line_h
        if colour is not None:
            draw.rectangle([4, y + 2, 4 + line_h - 6, y + line_h - 4], fill=colour)
        draw.text((4 + x, y), text, fill=(0, 0, 0), font=legend_font)
    return panel


def annotate(image: Image.Image, phrases: Sequence[Phrase], caption: str, size: int = 384) -> Image.Image:
    """One tile: the image with its boxes, and the legend (caption and phrases) under it."""
    boxed = draw_boxes(image, phrases, size)
    legend = draw_legend(phrases, max(boxed.width, size), caption)
    tile = Image.new("RGB", (legend.width, boxed.height + legend.height), (255, 255, 255))
    tile.paste(boxed, (0, 0))
    tile.paste(legend, (0, boxed.height))
    return tile
