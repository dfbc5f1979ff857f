"""`grit convert`: shards -> kosmos2-tsv, webdataset, jsonl or a `datasets` folder (`shards.convert`)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from grit_pipeline.errors import CommandError
from grit_pipeline.shards.common import (
    add_max_pixels_argument,
    add_path_argument,
    prepare_output_dir,
    resolve_files,
)
from grit_pipeline.shards.convert import FORMATS, convert_files
from grit_pipeline.shards.guard import ProblemLog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_path_argument(parser)
    parser.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder, new or empty (any fsspec URL)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a folder that already holds files"
    )
    parser.add_argument(
        "--include-images",
        action="store_true",
        help="jsonl: embed image bytes as base64 (default: size only)",
    )
    add_max_pixels_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    files = resolve_files(args.path)
    prepare_output_dir(args.out, args.overwrite)  # refuse a non-empty folder before any work
    log = ProblemLog(args.path)
    if args.to == "hf-dataset":
        from grit_pipeline.shards.hf_export import save_hf_dataset

        written, skipped = save_hf_dataset(files, args.out, args.quiet, log, args.max_pixels), Counter()
    else:
        written, skipped = convert_files(
            files, args.to, args.out, args.include_images, args.quiet, log, args.max_pixels
        )
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    summary = f"{written:,} rows written to {args.out} ({args.to})"
    print(summary + (f"; skipped {detail}" if detail else ""), file=sys.stderr)
    log.finish()
    if written == 0:
        raise CommandError(f"nothing converted: every row was skipped ({detail})")
    return 0
