"""`grit synth`: a synthetic grounded corpus of coloured shapes (`model.synth`)."""

from __future__ import annotations

import argparse

from grit_pipeline.errors import CommandError
from grit_pipeline.model.synth import SynthConfig, write_synth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (any fsspec path)")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=SynthConfig.image_size, help="shorter side, pixels")
    parser.add_argument("--max-aspect", type=float, default=SynthConfig.max_aspect)
    parser.add_argument("--min-objects", type=int, default=SynthConfig.min_objects)
    parser.add_argument("--max-objects", type=int, default=SynthConfig.max_objects)
    parser.add_argument(
        "--min-size", type=float, default=SynthConfig.min_size_frac, help="fraction of the side"
    )
    parser.add_argument(
        "--max-size", type=float, default=SynthConfig.max_size_frac, help="fraction of the side"
    )
    parser.add_argument("--rows-per-shard", type=int, default=5000)


def run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.rows_per_shard < 1:
        raise CommandError(
            f"--n and --rows-per-shard must be positive, got {args.n} and {args.rows_per_shard}"
        )
    try:
        config = SynthConfig(
            image_size=args.image_size,
            max_aspect=args.max_aspect,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            min_size_frac=args.min_size,
            max_size_frac=args.max_size,
        )
    except ValueError as err:
        raise CommandError(str(err)) from err
    paths = write_synth(args.out, args.n, args.seed, config, args.rows_per_shard)
    print(f"wrote {args.n} rows in {len(paths)} shard(s) under {args.out}")
    return 0
