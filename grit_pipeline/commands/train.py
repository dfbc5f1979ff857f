"""`grit train`: argv -> TrainConfig -> `model.train.train`; user errors as CommandError."""

from __future__ import annotations

import argparse
from dataclasses import fields

from grit_pipeline.errors import CommandError
from grit_pipeline.filesystems import missing_file_system
from grit_pipeline.model.images import CROP_MODES
from grit_pipeline.model.presets import PRESETS
from grit_pipeline.model.train import TrainConfig, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parser.add_argument("--data", required=True, help="shard file, folder or glob (ours or GRIT-20M)")
    parser.add_argument("--out", required=True, help="output folder: checkpoints, tensorboard/")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument(
        "--init-from", default=None, help="pretrained folder or hub id; its processor is reused"
    )
    parser.add_argument("--images", default=None, help="img2dataset 'files' folder (images by key)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/latest")
    for name in (
        "max_steps", "max_minutes", "batch_size", "grad_accum", "lr", "warmup_steps", "weight_decay",
        "clip_norm", "save_every", "keep_checkpoints", "log_every", "seed", "num_workers", "shuffle_buffer",
        "tokenizer_rows", "p_grounded", "min_score", "location_grid", "max_length",
    ):  # fmt: skip
        default = defaults[name]
        kind = (
            float
            if name in ("max_minutes", "lr", "weight_decay", "clip_norm", "p_grounded", "min_score")
            else int
        )
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=f"default {default}"
        )
    parser.add_argument("--spans-column", default="ref_exps", choices=["ref_exps", "noun_chunks"])
    parser.add_argument("--image-mode", default="centre-crop", choices=list(CROP_MODES))
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="GPU: train in float32")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    # beta1, beta2 and eps are the paper's values and not flags; every other field is one.
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.max_steps < 1 or config.batch_size < 1 or config.grad_accum < 1:
        raise CommandError("--max-steps, --batch-size and --grad-accum must be positive")
    problem = missing_file_system(config.data)
    if problem is not None:
        raise CommandError(problem)
    try:
        state = train(config, resume=args.resume)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    print(f"trained to step {state.step}; newest checkpoint named in {config.out}/latest")
    return 0
