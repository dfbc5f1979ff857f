"""`grit validate`: shards -> one line per problem and the exit status (`shards.validate`)."""

from __future__ import annotations

import argparse
import sys

from grit_pipeline.errors import CommandError
from grit_pipeline.shards.common import (
    add_max_pixels_argument,
    add_path_argument,
    emit,
)
from grit_pipeline.shards.validate import validate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_path_argument(parser)
    parser.add_argument(
        "--max-errors",
        type=int,
        default=100,
        metavar="N",
        help="stop after N problems (default 100; 0 means report every problem)",
    )
    add_max_pixels_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    if args.max_errors < 0:
        raise CommandError(f"--max-errors must be 0 (no limit) or more, got {args.max_errors}")
    problems, shards, rows = validate(
        args.path, args.max_errors, quiet=args.quiet, max_pixels=args.max_pixels
    )
    for problem in problems:
        if not emit(str(problem)):
            return 1
    if not problems:
        emit(f"valid: {rows:,} rows in {shards} shard(s)")
        return 0
    stopped = args.max_errors and len(problems) >= args.max_errors
    tail = f" (stopped at --max-errors {args.max_errors}; there may be more)" if stopped else ""
    print(f"invalid: {len(problems)} problem(s) in {shards} shard(s){tail}", file=sys.stderr)
    return 1
