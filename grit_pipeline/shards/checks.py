"""The invariants of a shard, file by file and row by row: each check returns problem messages.

Row checks see a row in the v1 layout (as the reader returns it). The grounded caption is checked
against what ``assemble.grounded_caption`` would write for the row's ``ref_exps``: the spans left
after the containment filter, each with its boxes, the boxes within one location cell.
"""

from __future__ import annotations

import math
import warnings

import pyarrow as pa
from PIL import Image

from grit_pipeline.assemble import select_grounding_spans
from grit_pipeline.fetch import FetchConfig, FetchError
from grit_pipeline.fetch.formats import open_header
from grit_pipeline.locations import NUM_PATCHES_PER_SIDE, parse_grounded_caption, strip_offsets
from grit_pipeline.markup import tag_character_problem
from grit_pipeline.schemas import (
    SCHEMA_KEY,
    SHARD_SCHEMA,
    SHARD_SCHEMA_VERSION,
    column_type_problems,
    group_by_span,
    spans_from_column,
)

SPAN_COLUMNS = ("noun_chunks", "ref_exps")
REQUIRED_COLUMNS = ("key", "caption", "noun_chunks", "ref_exps")  # what even a GRIT-20M file has
# A box decoded from location tokens is within one cell of the stored box; a little slack for floats.
CELL_TOLERANCE = 1.0 / NUM_PATCHES_PER_SIDE + 1e-9
# The build's pixel limit: an image the build would have refused is never decoded by a tool either.
MAX_PIXELS = FetchConfig.max_pixels


def schema_problems(schema: pa.Schema) -> list[str]:
    """Problems with a file's own schema: missing columns, wrong types, another schema version."""
    problems = []
    declared = (schema.metadata or {}).get(SCHEMA_KEY)
    ours = declared is not None
    if ours and declared.decode() != f"shard/{SHARD_SCHEMA_VERSION}":
        problems.append(
            f"schema version {declared.decode()!r}, this tool reads 'shard/{SHARD_SCHEMA_VERSION}'"
        )
    # Our shards must carry every v1 column; a GRIT-20M file (no schema key) carries its own subset.
    required = SHARD_SCHEMA.names if ours else REQUIRED_COLUMNS
    missing = [name for name in required if name not in schema.names]
    if missing:
        problems.append(f"missing columns {missing}")
    return problems + column_type_problems(schema)


def _span_problems(column: str, cell, caption: str) -> list[str]:
    problems = []
    for i, values in enumerate(cell or ()):
        where = f"{column}[{i}]"
        if values is None or len(values) != 7:
            problems.append(f"{where}: expected [start, end, x1, y1, x2, y2, score], got {values}")
            continue
        if any(v is None or not math.isfinite(v) for v in values):
            problems.append(f"{where}: holds a null, NaN or infinite number: {values}")
            continue
        start, end, x1, y1, x2, y2, score = values
        if start != int(start) or end != int(end) or not 0 <= start < end <= len(caption):
            problems.append(
                f"{where}: span [{start}, {end}) is not a non-empty integer range inside the caption "
                f"(length {len(caption)})"
            )
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            problems.append(
                f"{where}: box ({x1}, {y1}, {x2}, {y2}) breaks 0 <= x1 < x2 <= 1 / 0 <= y1 < y2 <= 1"
            )
        if not 0 <= score <= 1:
            problems.append(f"{where}: score {score} outside [0, 1]")
    return problems


def span_problems(row: dict) -> list[str]:
    """Spans inside the caption, boxes inside the image with positive size, scores in [0, 1]."""
    caption = row.get("caption")
    if caption is None:
        return ["caption is null"]
    return [p for column in SPAN_COLUMNS for p in _span_problems(column, row.get(column), caption)]


def _expected_entities(caption: str, ref_exps) -> list[tuple[str, tuple[int, int], list]]:
    """(phrase, span in the stripped caption, stored boxes) as the grounded caption should carry them."""
    leading = len(caption) - len(caption.lstrip())
    expected = []
    for (start, end), group in group_by_span(select_grounding_spans(spans_from_column(ref_exps))).items():
        phrase_start, phrase_end = strip_offsets(caption, start, end)
        span = (phrase_start - leading, phrase_end - leading)
        expected.append((caption[phrase_start:phrase_end], span, [s.box.as_tuple() for s in group]))
    return expected


def _within_one_cell(decoded, stored) -> bool:
    return all(abs(a - b) <= CELL_TOLERANCE for a, b in zip(decoded, stored))


def grounded_caption_problems(row: dict) -> list[str]:
    """The grounded caption parses back to the caption, the kept ``ref_exps`` spans and their boxes."""
    text, caption = row.get("grounded_caption"), row["caption"]
    if text is None:
        return ["grounded_caption is null"]
    clean, entities = parse_grounded_caption(text)
    if clean != caption.strip():
        return [f"grounded_caption's text {clean!r} is not the caption {caption.strip()!r}"]
    expected = _expected_entities(caption, row.get("ref_exps"))
    got_spans = [(name, span) for name, span, _ in entities]
    want_spans = [(name, span) for name, span, _ in expected]
    if got_spans != want_spans:
        return [f"grounded_caption holds phrases {got_spans}, ref_exps after containment give {want_spans}"]
    problems = []
    for (name, _, got_boxes), (_, _, want_boxes) in zip(entities, expected):
        if len(got_boxes) != len(want_boxes) or not all(map(_within_one_cell, got_boxes, want_boxes)):
            problems.append(
                f"grounded_caption boxes of {name!r} {[tuple(round(v, 4) for v in b) for b in got_boxes]} "
                f"are not within one cell of ref_exps boxes {want_boxes}"
            )
    return problems


class ImageProblem(ValueError):
    """Image bytes that a tool will not decode: unreadable, or over the pixel limit."""


def _undecodable(err: Exception) -> ImageProblem:
    return ImageProblem(f"image does not decode ({type(err).__name__}: {err})")


def image_header(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image of ``data`` opened lazily (header only), refused when it has more than ``max_pixels``."""
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: our limit is the one reported
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = open_header(data, max_pixels)  # the build's formats only (an ICO decodes in open)
    except FetchError as err:
        if err.failure.reason == "too_many_pixels":
            raise ImageProblem(f"image is over the limit of {max_pixels:,} pixels: {err}") from err
        verb = "is not decoded" if err.failure.reason == "unsupported_format" else "does not decode"
        raise ImageProblem(f"image {verb} ({err.failure.reason}: {err})") from err
    except Exception as err:  # PIL raises many types for bad bytes, DecompressionBombError among them
        raise _undecodable(err) from err
    width, height = image.size
    if width * height > max_pixels:
        raise ImageProblem(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(the build's --max-pixels default; raise it with --max-pixels)"
        )
    return image


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The decoded image of ``data``, decoded only when its header says at most ``max_pixels`` pixels."""
    image = image_header(data, max_pixels)
    try:
        image.load()  # decodes the pixels, so a truncated file fails here rather than later
    except Exception as err:
        raise _undecodable(err) from err
    return image


def image_header_problems(row: dict, max_pixels: int = MAX_PIXELS) -> list[str]:
    """The row's image header is readable and within the pixel limit (no pixel is decoded)."""
    try:
        if row.get("image") is not None:
            image_header(row["image"], max_pixels)
    except ImageProblem as problem:
        return [str(problem)]
    return []


def image_problems(row: dict, max_pixels: int = MAX_PIXELS) -> list[str]:
    """The image decodes, has the recorded ``image_width``/``image_height`` and the aspect of width/height."""
    data = row.get("image")
    if data is None:
        return []  # images are optional (GRIT-20M stores none)
    try:
        size = open_image(data, max_pixels).size
    except ImageProblem as problem:
        return [str(problem)]
    recorded = (row.get("image_width"), row.get("image_height"))
    if size != recorded:
        return [f"image is {size[0]}x{size[1]}, image_width/image_height record {recorded[0]}x{recorded[1]}"]
    width, height = row.get("width"), row.get("height")
    if width is not None and height is not None and width > 0 and height > 0:
        # Resizing rounds each side to whole pixels: allow half a pixel on each side, scaled back.
        slack = 0.5 * (width + height) + 1e-6
        if abs(size[0] * height - size[1] * width) > slack:
            return [f"image is {size[0]}x{size[1]}, not the aspect of the original {width}x{height}"]
    return []


def _key_and_size_problems(row: dict) -> list[str]:
    problems = [] if row.get("key") else ["key is null or empty"]
    caption = row.get("caption")
    if isinstance(caption, str) and (problem := tag_character_problem(caption)) is not None:
        problems.append(f"caption {problem}")  # the same check as the renderer's and the trainer's
    for name in ("width", "height", "image_width", "image_height"):
        if row.get(name) is not None and row[name] <= 0:
            problems.append(f"{name} is {row[name]}, expected a positive size")
    return problems


def basic_problems(row: dict) -> list[str]:
    """The problems every shard tool refuses in a row: empty key, non-positive sizes, broken spans or boxes."""
    return _key_and_size_problems(row) + span_problems(row)


def row_problems(row: dict, check_grounded_caption: bool, max_pixels: int = MAX_PIXELS) -> list[str]:
    """Every row-level problem of one row."""
    spans = span_problems(row)
    problems = _key_and_size_problems(row) + spans
    # Only rows whose spans are sound can be rendered and compared.
    if check_grounded_caption and not spans and row.get("caption") is not None:
        problems += grounded_caption_problems(row)
    return problems + image_problems(row, max_pixels)
