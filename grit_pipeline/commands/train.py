"""`grit train`: argv -> TrainConfig (whose fields declare the flags) -> `model.train.train`; user errors as CommandError."""

from __future__ import annotations

import argparse
from dataclasses import fields

from grit_pipeline.errors import CommandError
from grit_pipeline.filesystems import missing_file_system
from grit_pipeline.flags import add_flags, from_flags
from grit_pipeline.model.examples import ExampleConfig
from grit_pipeline.model.train import TrainConfig, train

EXAMPLE_FIELDS = tuple(f.name for f in fields(ExampleConfig))  # listed apart in --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, TrainConfig, skip=EXAMPLE_FIELDS)
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUT/latest")
    add_flags(parser.add_argument_group("training text (ExampleConfig)"), TrainConfig, only=EXAMPLE_FIELDS)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig; CommandError (one line naming the flag) on a bad value."""
    try:
        return from_flags(TrainConfig, args)
    except ValueError as err:
        raise CommandError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    problem = missing_file_system(config.data)
    if problem is not None:
        raise CommandError(problem)
    try:
        state = train(config, resume=args.resume)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    print(f"trained to step {state.step}; newest checkpoint named in {config.out}/latest")
    return 0
