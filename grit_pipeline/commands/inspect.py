"""`grit inspect`: shards -> the inspection report as a table, JSON and plots (`shards.inspect`)."""

from __future__ import annotations

import argparse
import json

from grit_pipeline.shards.common import add_path_argument, emit
from grit_pipeline.shards.guard import ProblemLog
from grit_pipeline.shards.inspect import collect, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_path_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--plots", metavar="DIR", help="also write PNG histograms into DIR (a local folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


def run(args: argparse.Namespace) -> int:
    log = ProblemLog(args.path)
    report, stats = collect(args.path, quiet=args.quiet, log=log)
    if args.plots:
        from grit_pipeline.shards.plots import write_plots

        report["plots"] = write_plots(stats, args.plots)
    emit(json.dumps(report, indent=2) if args.json else format_table(report))
    log.finish()
    return 0
