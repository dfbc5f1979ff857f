"""`grit show`: shards -> drawn samples, a contact sheet and an HTML gallery (`shards.show`)."""

from __future__ import annotations

import argparse
import os
import sys

from grit_pipeline.errors import CommandError
from grit_pipeline.shards.checks import ImageProblem
from grit_pipeline.shards.common import add_max_pixels_argument, add_path_argument
from grit_pipeline.shards.gallery import contact_sheet, html_gallery
from grit_pipeline.shards.guard import Problem, ProblemLog
from grit_pipeline.shards.show import SPAN_CHOICES, draw_row, select_rows


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
    add_max_pixels_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.size < 32:
        raise CommandError(f"--n must be at least 1 and --size at least 32, got {args.n} and {args.size}")
    os.makedirs(os.path.join(args.out, "samples"), exist_ok=True)
    items, tiles, log = [], [], ProblemLog(args.path)
    for shard, number, row in select_rows(args.path, args.n, args.key, args.quiet, log, args.max_pixels):
        try:
            item, boxed, tile = draw_row(row, args.spans, args.size, args.max_pixels)
        except ImageProblem as problem:
            log.report(Problem(shard, str(problem), number, row["key"]))
            continue
        boxed.save(os.path.join(args.out, "samples", f"{len(items):04d}.png"))
        items.append(item)
        tiles.append(tile)
    if not items:
        log.finish()
    contact_sheet(tiles, args.columns).save(os.path.join(args.out, "contact_sheet.png"))
    with open(os.path.join(args.out, "gallery.html"), "w", encoding="utf-8") as handle:
        handle.write(html_gallery(items, title=f"GRIT samples: {args.path}"))
    print(
        f"{len(items)} samples drawn into {args.out}: contact_sheet.png, gallery.html, samples/",
        file=sys.stderr,
    )
    log.finish()
    return 0
