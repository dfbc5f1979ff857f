"""`grit head`: the first rows of shards as JSON lines, image bytes left out (their size in ``image_bytes``)."""

from __future__ import annotations

import argparse
import json

from grit_pipeline.errors import CommandError
from grit_pipeline.shards.common import (
    add_path_argument,
    emit,
    read_table,
    resolve_files,
    row_without_image,
)
from grit_pipeline.shards.guard import ProblemLog


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_path_argument(parser)
    parser.add_argument("--n", type=int, default=10, help="how many rows (default 10)")
    parser.add_argument(
        "--shard-path", action="store_true", help="add each row's shard and row index (`_shard`, `_row`)"
    )


def run(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise CommandError(f"--n must be 0 or more, got {args.n}")
    left, log = args.n, ProblemLog(args.path)
    for path in resolve_files(args.path):
        if left == 0:
            break
        table = read_table(path).slice(0, left)  # only the rows shown are turned into Python objects
        log.good_rows(path, table)  # broken rows are still printed (that is what head is for), and reported
        for index, row in enumerate(table.to_pylist()):
            record = row_without_image(row)
            if args.shard_path:
                record.update({"_shard": path, "_row": index})
            if not emit(json.dumps(record, ensure_ascii=False)):
                return 0
        left -= table.num_rows
    log.finish()
    return 0
