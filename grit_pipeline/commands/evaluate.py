"""`grit eval`: a checkpoint on held-out shards (`model.evaluate`) or a standard benchmark (`model.benchmark_eval`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

from grit_pipeline.errors import CommandError
from grit_pipeline.model.evaluate import evaluate, load_checkpoint
from grit_pipeline.model.referring import GenerationConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grit_pipeline.model.benchmark_eval import BENCHMARKS, PROTOCOLS

    parser.add_argument(
        "--checkpoint", required=True, help="checkpoint folder, training output folder or hub id"
    )
    parser.add_argument("--data", required=True, help="held-out shards, or the benchmark's folder")
    parser.add_argument(
        "--images", default=None, help="images folder (img2dataset 'files', or the benchmark's)"
    )
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default=None, help="a standard benchmark")
    parser.add_argument(
        "--split", action="append", default=None, help="benchmark split (repeatable; default all)"
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="any-box", help="Flickr30k box protocol")
    parser.add_argument("--limit", type=int, default=None, help="benchmark: first N queries of each split")
    parser.add_argument("--out", default=None, help="benchmark: predictions and pictures (default eval-NAME)")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationConfig.max_new_tokens)
    parser.add_argument(
        "--device", default="auto", help="benchmark: auto (CUDA when present), cpu, cuda, cuda:N"
    )
    parser.add_argument("--max-rows", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def run_on_benchmark(args: argparse.Namespace) -> int:
    from grit_pipeline.model.benchmark_eval import collect_queries, run_benchmark, table

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    args.out = args.out or f"eval-{args.benchmark}"
    queries = collect_queries(args)
    model, processor, grid = load_checkpoint(args.checkpoint)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    metrics = run_benchmark(args, queries, model.to(device), processor, grid)
    print(json.dumps(metrics) if args.json else table(metrics))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        if args.benchmark:
            return run_on_benchmark(args)
        metrics = evaluate(args.checkpoint, args.data, args.images, args.max_rows, args.batch_size)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    if args.json:
        print(json.dumps(asdict(metrics)))
    else:
        for name, value in asdict(metrics).items():
            print(f"{name:<24} {value:.4f}" if isinstance(value, float) else f"{name:<24} {value}")
    return 0
