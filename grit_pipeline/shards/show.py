"""`grit show`: samples drawn with their boxes: one PNG per sample, a contact sheet and an HTML gallery.

Writes into ``--out``: ``samples/NNNN.png`` (the image with boxes and labels), ``contact_sheet.png``
(every sample with its legend) and ``gallery.html`` (self-contained: images embedded as data URIs).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from grit_pipeline.assemble import select_grounding_spans
from grit_pipeline.errors import CommandError
from grit_pipeline.schemas import spans_from_column
from grit_pipeline.shards.checks import open_image
from grit_pipeline.shards.common import iter_tables, resolve_files
from grit_pipeline.shards.drawing import annotate, draw_boxes, phrases_of
from grit_pipeline.shards.gallery import GalleryItem, png_bytes
from grit_pipeline.shards.guard import ProblemLog

SPAN_CHOICES = ("grounded", "ref_exps", "noun_chunks")


def selected_spans(row: dict, which: str):
    if which == "noun_chunks":
        return spans_from_column(row["noun_chunks"])
    spans = spans_from_column(row["ref_exps"])
    return select_grounding_spans(spans) if which == "grounded" else spans


def _numpy(mask) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def select_rows(
    path: str, n: int, keys: list[str], quiet: bool, log: ProblemLog, max_pixels: int
) -> Iterator[tuple[str, int, dict]]:
    """``(shard, row number, row)`` of the first ``n`` sound rows with image bytes, or of the rows of ``keys``.

    Rows with problems are reported to ``log`` and passed over; a CommandError names missing keys.
    """
    wanted, found, without_image = set(keys), set(), 0
    for shard, table in iter_tables(resolve_files(path), desc="show", quiet=quiet):
        chosen = np.ones(table.num_rows, dtype=bool)
        if wanted:  # Arrow picks the rows, so large shards are not turned into Python objects
            chosen = _numpy(pc.is_in(table["key"], value_set=pa.array(sorted(wanted), pa.string())))
        has_image = _numpy(table["image"].is_valid())
        without_image += int((chosen & ~has_image).sum())
        if wanted and without_image:
            raise CommandError(
                f"keys {sorted(wanted)} include rows without image bytes (only their URL is stored)"
            )
        numbers, cursor = np.flatnonzero(chosen & has_image), 0
        while cursor < len(numbers):  # a slice at a time: a bad row makes room for the next one
            need = len(numbers) if wanted else n - len(found)
            part, cursor = numbers[cursor : cursor + need], cursor + need
            batch = table.take(part)
            good = log.good_rows(shard, batch, part, max_pixels)
            for number, row in zip(part[good].tolist(), batch.filter(pa.array(good)).to_pylist()):
                found.add(row["key"])
                yield shard, number, row
            if (wanted and found >= wanted) or (not wanted and len(found) >= n):
                return
    if log.count:
        return  # the problems explain why fewer rows were found
    if wanted - found:
        raise CommandError(f"keys not found under {path!r}: {sorted(wanted - found)}")
    if not found:
        raise CommandError(
            f"no row under {path!r} has image bytes ({without_image} rows without); GRIT-20M files carry "
            "only URLs: download the images (img2dataset or `grit build`) and show the result"
        )


def draw_row(
    row: dict, which: str, size: int, max_pixels: int
) -> tuple[GalleryItem, Image.Image, Image.Image]:
    """The gallery entry, the boxed image and the contact-sheet tile of one row; ImageProblem for bad bytes."""
    with open_image(row["image"], max_pixels) as decoded:
        image = decoded.convert("RGB")
    phrases = phrases_of(row["caption"], selected_spans(row, which))
    boxed = draw_boxes(image, phrases, size)
    item = GalleryItem(
        row["key"], row["caption"], row.get("grounded_caption"), tuple(phrases), png_bytes(boxed)
    )
    return item, boxed, annotate(image, phrases, row["caption"], size)
