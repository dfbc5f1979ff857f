"""`grit show`: samples drawn with their boxes: one PNG per sample, a contact sheet and an HTML gallery.

Writes into ``--out``: ``samples/NNNN.png`` (the image with boxes and labels), ``contact_sheet.png``
(every sample with its legend) and ``gallery.html`` (self-contained: images embedded as data URIs).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from grit_pipeline.assemble import select_grounding_spans
from grit_pipeline.cli import CommandError
from grit_pipeline.schemas import spans_from_column
from grit_pipeline.shards.common import add_path_argument, iter_tables, resolve_files, table_rows
from grit_pipeline.shards.drawing import annotate, draw_boxes, phrases_of
from grit_pipeline.shards.gallery import GalleryItem, contact_sheet, html_gallery, png_bytes

SPAN_CHOICES = ("grounded", "ref_exps", "noun_chunks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_path_argument(parser)
    parser.add_argument(
        "--n", type=int, default=16, help="how many samples (default 16; the first rows with images)"
    )
    parser.add_argument("--key", action="append", default=[], metavar="K", help="show this key (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (local)")
    parser.add_argument(
        "--spans",
        choices=SPAN_CHOICES,
        default="grounded",
        help="which spans to draw: 'grounded' (ref_exps after containment, what the grounded caption "
        "holds; default), all 'ref_exps', or 'noun_chunks'",
    )
    parser.add_argument("--size", type=int, default=384, help="longer image side in pixels (default 384)")
    parser.add_argument(
        "--columns", type=int, default=None, help="contact-sheet columns (default: a square grid)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def selected_spans(row: dict, which: str):
    if which == "noun_chunks":
        return spans_from_column(row["noun_chunks"])
    spans = spans_from_column(row["ref_exps"])
    return select_grounding_spans(spans) if which == "grounded" else spans


def select_rows(path: str, n: int, keys: list[str], quiet: bool) -> Iterator[dict]:
    """The first ``n`` rows with image bytes, or the rows of ``keys`` (a CommandError names missing ones)."""
    wanted, found, without_image = set(keys), set(), 0
    for _, table in iter_tables(resolve_files(path), desc="show", quiet=quiet):
        if wanted:  # Arrow picks the rows, so large shards are not turned into Python objects
            table = table.filter(pc.is_in(table["key"], value_set=pa.array(sorted(wanted), pa.string())))
        has_image = table["image"].is_valid()
        without_image += table["image"].null_count
        if wanted and without_image:
            raise CommandError(
                f"keys {sorted(wanted)} include rows without image bytes (only their URL is stored)"
            )
        table = table.filter(has_image).slice(0, len(wanted) - len(found) if wanted else n - len(found))
        for row in table_rows(table):
            found.add(row["key"])
            yield row
        if (wanted and found >= wanted) or (not wanted and len(found) >= n):
            return
    if wanted - found:
        raise CommandError(f"keys not found under {path!r}: {sorted(wanted - found)}")
    if not found:
        raise CommandError(
            f"no row under {path!r} has image bytes ({without_image} rows without); GRIT-20M files carry "
            "only URLs: download the images (img2dataset or `grit build`) and show the result"
        )


def draw_row(row: dict, which: str, size: int) -> tuple[GalleryItem, Image.Image, Image.Image]:
    """The gallery entry, the boxed image and the contact-sheet tile of one row."""
    try:
        with Image.open(io.BytesIO(row["image"])) as decoded:
            image = decoded.convert("RGB")
    except Exception as err:  # PIL raises many types for bad bytes
        raise CommandError(f"key {row['key']!r}: image does not decode ({err}); run `grit validate`") from err
    try:
        phrases = phrases_of(row["caption"], selected_spans(row, which))
    except ValueError as err:
        raise CommandError(f"key {row['key']!r}: {err}; run `grit validate`") from err
    boxed = draw_boxes(image, phrases, size)
    item = GalleryItem(
        row["key"], row["caption"], row.get("grounded_caption"), tuple(phrases), png_bytes(boxed)
    )
    return item, boxed, annotate(image, phrases, row["caption"], size)


def run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.size < 32:
        raise CommandError(f"--n must be at least 1 and --size at least 32, got {args.n} and {args.size}")
    os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
    items, tiles = [], []
    for i, row in enumerate(select_rows(args.path, args.n, args.key, args.quiet)):
        item, boxed, tile = draw_row(row, args.spans, args.size)
        boxed.save(os.path.join(args.out, "samples", f"{i:04d}.png"))
        items.append(item)
        tiles.append(tile)
    contact_sheet(tiles, args.columns).save(os.path.join(args.out, "contact_sheet.png"))
    with open(os.path.join(args.out, "gallery.html"), "w", encoding="utf-8") as handle:
        handle.write(html_gallery(items, title=f"GRIT samples: {args.path}"))
    print(
        f"{len(items)} samples drawn into {args.out}: contact_sheet.png, gallery.html, samples/",
        file=sys.stderr,
    )
    return 0
