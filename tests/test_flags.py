"""Flags declared once, on the configs: every command's flags, defaults, shared detector rule and errors.

The commands' parsers are the real ones (each module's ``add_arguments``, as ``grit`` calls it); bad
values go through the real entry point, ``grit_pipeline.cli.main``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import MISSING, asdict, dataclass, fields

import pytest
from PIL import Image

from grit_pipeline.beam_jobs.config import BuildConfig
from grit_pipeline.beam_jobs.options import BEAM_ARGV, build_config, worker_threads
from grit_pipeline.cli import COMMANDS, main
from grit_pipeline.commands import audit, ground, train
from grit_pipeline.commands.audit import AuditConfig
from grit_pipeline.fetch import FetchConfig
from grit_pipeline.flags import add_flags, declared, flag, flag_error, from_flags
from grit_pipeline.grounding.config import (
    PAPER_BOX_THRESHOLD,
    TINY_BOX_THRESHOLD,
    TINY_DETECTOR,
    DetectorConfig,
)
from grit_pipeline.inputs import InputConfig
from grit_pipeline.model.examples import ExampleConfig
from grit_pipeline.model.train import TrainConfig
from grit_pipeline.text import TextConfig

# The configs whose flags each command declares.
CONFIGS = {
    "build": (BuildConfig, InputConfig, DetectorConfig, TextConfig, FetchConfig),
    "ground": (DetectorConfig, TextConfig),
    "audit": (AuditConfig, DetectorConfig, TextConfig),
    "train": (TrainConfig,),
    "parse": (TextConfig,),
}
# Arguments that set no config field: what a command runs on and how it shows it, or (build) the
# two ways of naming inputs that build_config resolves into input_paths, output and input_options.
NOT_CONFIG = {
    "build": {"--example", "--retry-rejects"},
    "ground": {"--image", "--caption", "--json", "--out"},
    "audit": {"--json"},
    "train": {"--resume"},
    "parse": {"captions", "--json"},
}
# Declared flags a command leaves out: they mean nothing there.
LEFT_OUT = {
    "ground": {"--detector-batch-size", "--detector-image", "--detector-threads"},
    "audit": {"--detector-image", "--detector-threads"},
}
DETECTOR_COMMANDS = ("build", "ground", "audit")


def command_parser(command: str) -> argparse.ArgumentParser:
    """`grit COMMAND`'s parser, built as ``grit_pipeline.cli`` builds it."""
    parser = argparse.ArgumentParser(prog=f"grit {command}")
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    return parser


def required_argv(command: str, tmp_path) -> list[str]:
    """The least argv each command runs with (no file needs to exist: configs come first)."""
    return {
        "build": ["--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out")],
        "ground": ["--image", str(tmp_path / "photo.png"), "--caption", "a dog on the grass"],
        "audit": ["--data", str(tmp_path / "flickr30k")],
        "train": ["--data", str(tmp_path / "shards"), "--out", str(tmp_path / "run")],
        "parse": ["a dog"],
    }[command]


def detector_of(command: str, extra: list[str], tmp_path) -> DetectorConfig:
    """The DetectorConfig that `grit COMMAND` builds from its argv."""
    args = command_parser(command).parse_args([*required_argv(command, tmp_path), *extra])
    if command == "build":
        return build_config(args).detector
    if command == "ground":
        return ground.configs(args)[0]
    return audit.audit_config(args).detector


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_flag_is_a_config_fields_own_with_its_default(command):
    declarations = {d.options[0]: d for cls in CONFIGS[command] for d in declared(cls)}
    assert not NOT_CONFIG[command] & set(declarations)  # a config's flag is never hidden among them
    seen = set()
    for action in command_parser(command)._actions:
        if isinstance(action, argparse._HelpAction) or action.dest == BEAM_ARGV:
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        if name in NOT_CONFIG[command]:
            continue
        assert name in declarations, f"grit {command} {name} is no config field's flag"
        d = declarations[name]
        field_default = None if d.default is MISSING else d.default
        assert (tuple(action.option_strings), action.dest) == (d.options, d.dest), name
        assert action.default == field_default, (
            f"grit {command} {name}: {action.default!r} != {field_default!r}"
        )
        seen.add(name)
    assert set(declarations) - seen == LEFT_OUT.get(command, set())


def test_without_flags_every_command_builds_the_default_configs(tmp_path):
    def parse(command):
        return command_parser(command).parse_args(required_argv(command, tmp_path))

    args = parse("build")
    assert build_config(args) == BuildConfig(
        input_paths=(str(tmp_path / "in.csv"),),
        output=str(tmp_path / "out"),
        detector=DetectorConfig(threads=worker_threads(args)),  # only the torch pool is sized at launch
    )
    assert ground.configs(parse("ground")) == (DetectorConfig(batch_size=1), TextConfig())
    assert audit.audit_config(parse("audit")) == AuditConfig(data=str(tmp_path / "flickr30k"))
    data, out = str(tmp_path / "shards"), str(tmp_path / "run")
    assert train.config_from_args(parse("train")) == TrainConfig(data=data, out=out)


@pytest.mark.parametrize(
    ("model", "expected"),
    [(TINY_DETECTOR, TINY_BOX_THRESHOLD), ("IDEA-Research/grounding-dino-base", PAPER_BOX_THRESHOLD)],
)
def test_the_default_threshold_is_the_models_in_every_command(tmp_path, model, expected):
    thresholds = {c: detector_of(c, ["--detector", model], tmp_path).box_threshold for c in DETECTOR_COMMANDS}
    assert thresholds == dict.fromkeys(DETECTOR_COMMANDS, expected)
    given = ["--detector", model, "--box-threshold", "0.4"]
    assert {detector_of(c, given, tmp_path).box_threshold for c in DETECTOR_COMMANDS} == {0.4}


def test_the_build_fallback_gets_its_own_models_threshold(tmp_path):
    args = command_parser("build").parse_args(
        [*required_argv("build", tmp_path), "--detector-fallback", TINY_DETECTOR, "--nms-iou", "0.3"]
    )
    config = build_config(args)
    assert (config.detector.box_threshold, config.detector_fallback.box_threshold) == (
        PAPER_BOX_THRESHOLD,
        TINY_BOX_THRESHOLD,
    )
    assert config.detector_fallback == DetectorConfig(
        model=TINY_DETECTOR, nms_iou=0.3, threads=config.detector.threads
    )


@pytest.mark.parametrize("flag_name", ["--detector-backend", "--backend"])
def test_one_backend_flag_and_its_alias_in_every_command(tmp_path, flag_name):
    backends = {c: detector_of(c, [flag_name, "groundingdino"], tmp_path).backend for c in DETECTOR_COMMANDS}
    assert backends == dict.fromkeys(DETECTOR_COMMANDS, "groundingdino")


def test_ground_runs_the_tiny_detector_at_its_threshold(tmp_path, capsys):
    Image.new("RGB", (96, 64), (90, 140, 60)).save(tmp_path / "photo.png")
    argv = ["ground", *required_argv("ground", tmp_path), "--detector", TINY_DETECTOR, "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["box_threshold"] == TINY_BOX_THRESHOLD


BAD_VALUES = [
    ("build", ["--box-threshold", "2"], "--box-threshold must be in [0, 1], got 2.0"),
    ("build", ["--rows-per-shard", "0"], "--rows-per-shard must be >= 1, got 0"),
    ("build", ["--timeout", "0"], "--timeout must be > 0, got 0.0"),
    ("build", ["--url-column", ""], "--url-column must name a column, got ''"),
    ("build", ["--max-caption-chars", "0"], "--max-caption-chars must be >= 1, got 0"),
    ("build", ["--max-batch-wait", "0"], "--max-batch-wait must be > 0, got 0.0"),
    ("ground", ["--box-threshold", "-0.1"], "--box-threshold must be in [0, 1], got -0.1"),
    ("ground", ["--nms-iou", "1.5"], "--nms-iou must be in [0, 1], got 1.5"),
    ("audit", ["--box-threshold", "2"], "--box-threshold must be in [0, 1], got 2.0"),
    ("audit", ["--detector-batch-size", "0"], "--detector-batch-size must be >= 1, got 0"),
    ("audit", ["--limit", "0"], "--limit must be >= 1, got 0"),
    ("train", ["--save-every", "0"], "--save-every must be >= 1, got 0"),
    ("train", ["--log-every", "0"], "--log-every must be >= 1, got 0"),
    ("train", ["--max-steps", "0"], "--max-steps must be >= 1, got 0"),
    ("train", ["--lr", "0"], "--lr must be > 0, got 0.0"),
    ("train", ["--p-grounded", "2"], "--p-grounded must be in [0, 1], got 2.0"),
    ("train", ["--location-grid", "40"], "--location-grid must be in 1..32 (1,024 location tokens), got 40"),
]


@pytest.mark.parametrize(("command", "extra", "message"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_flag(tmp_path, capsys, command, extra, message):
    assert main([command, *required_argv(command, tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith(f"grit {command}:")] == [
        f"grit {command}: error: {message}"
    ]
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_train_holds_the_example_fields_once_and_saves_them_flat():
    example = {f.name: f for f in fields(ExampleConfig)}
    trainer = {f.name: f for f in fields(TrainConfig)}
    for name, declaration in example.items():  # inherited, not repeated (location_grid: the preset's)
        assert (trainer[name] is declaration) == (name != "location_grid"), name
    config = TrainConfig(data="d", out="o", min_score=0.5)
    assert config.text_config(16) == ExampleConfig(min_score=0.5, location_grid=16)
    assert asdict(config)["min_score"] == 0.5  # training_config.json stays one flat object


# The flags module itself, on a config of every kind of field.


@dataclass(frozen=True)
class Sample:
    name: str = flag(help="required")
    size: int = flag(3, help="a size")
    ratio: float | None = flag(None, help="optional")
    colour: str = flag("red", choices=("red", "blue"), help="a choice")
    loud: bool = flag(False, help="off by default")
    kept: bool = flag(True, help="on by default")
    tags: tuple[str, ...] = flag(("a",), sep=",", help="comma list")
    paths: tuple[str, ...] = flag((), name="--path", aliases=("-p",), help="repeatable")
    weights: tuple[float, ...] = flag((), sep=",", help="numbers")
    hidden: int = 7  # no flag


def sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sample")
    add_flags(parser, Sample)
    return parser


def test_each_kind_of_field_parses_to_its_value():
    parser = sample_parser()
    assert from_flags(Sample, parser.parse_args(["--name", "n"])) == Sample(name="n")
    argv = ["--name", "n", "--size", "4", "--ratio", "0.5", "--colour", "blue", "--loud", "--no-kept"]
    argv += ["--tags", "x, y", "--tags", "z", "--path", "a,b", "-p", "c", "--weights", "1,2.5"]
    assert from_flags(Sample, parser.parse_args(argv)) == Sample(
        "n", 4, 0.5, "blue", True, False, ("x", "y", "z"), ("a,b", "c"), (1.0, 2.5)
    )
    assert from_flags(Sample, parser.parse_args(["--name", "n"]), size=9).size == 9
    assert "(default 3)" in parser.format_help() and "(default a)" in parser.format_help()


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --name is required
        ["--name", "n", "--colour", "green"],
        ["--name", "n", "--size", "x"],
        ["--name", "n", "--weights", "1,x"],
        ["--name", "n", "--hidden", "1"],  # a field without a flag
        ["--name", "n", "--kept"],  # a True bool has only --no-kept
    ],
)
def test_missing_mistyped_and_unknown_flags_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        sample_parser().parse_args(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_errors_name_the_flag_or_else_the_field():
    assert str(flag_error(Sample(name="n"), "size", "must be even")) == "--size must be even, got 3"
    assert str(flag_error(Sample(name="n"), "kept", "must be off")) == "--no-kept must be off, got True"
    assert str(flag_error(Sample(name="n"), "hidden", "must be 8")) == "hidden must be 8, got 7"
