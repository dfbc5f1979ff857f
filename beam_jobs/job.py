"""From arguments to a finished run: checks before the pipeline starts, output modes, runner choice.

``run(argv)`` is the job's entry point (``python -m grit_pipeline.beam_jobs.job``); `grit build`
calls ``launch`` with its parsed arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import fsspec

import grit_pipeline
from grit_pipeline.beam_jobs import progress
from grit_pipeline.beam_jobs.options import add_arguments, build_config, detector_config, input_config
from grit_pipeline.beam_jobs.output_dir import (
    OutputExistsError,
    RunPlan,
    load_manifest,
    new_run_id,
    prepare,
    recover,
)
from grit_pipeline.beam_jobs.progress import LOGGER
from grit_pipeline.fetch import TRANSIENT_REASONS
from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig, DetectorUnavailableError, load_detector
from grit_pipeline.inputs import (
    InputConfig,
    InputError,
    check_input_files,
    keep_column_fields,
    list_input_files,
)
from grit_pipeline.locations import NUM_PATCHES_PER_SIDE
from grit_pipeline.schemas import SHARD_SCHEMA, SHARD_SCHEMA_VERSION, list_shard_files, read_shard
from grit_pipeline.text import PipelineNotFoundError, TextStage

EXAMPLE_DIR = Path(grit_pipeline.__file__).parent / "examples"
EXAMPLE_INPUT = InputConfig(image_path_column="image_path", keep_columns=("licence", "credit"))
# Runner names that mean "this machine": always Beam's FnApiRunner, never Prism (which downloads a binary).
LOCAL_RUNNERS = (None, "DirectRunner", "SwitchingDirectRunner", "FnApiRunner")


class BuildError(Exception):
    """A one-line user error (bad input, output exists, detector unavailable)."""


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (callers and pytest swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging() -> None:
    """Progress and summary lines to stderr (once per process; other handlers are left alone)."""
    if LOGGER.level == logging.NOTSET:
        LOGGER.setLevel(logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("grit build: %(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.propagate = False


def _input_files(inputs: list[str]) -> dict[str, int | None]:
    files: dict[str, int | None] = {}
    for spec in inputs:
        for path in list_input_files(spec):
            fs, fs_path = fsspec.core.url_to_fs(path)
            files[path] = fs.size(fs_path)
    return files


def _retry_plan(output: str) -> tuple[list[str], list]:
    """The rejects files of OUTPUT holding transient failures, and the shard schema's extra fields."""
    recover(output)
    if load_manifest(output) is None:
        raise BuildError(f"--retry-rejects: {output} holds no finished build (no manifest.json)")
    fs, root = fsspec.core.url_to_fs(output)
    sources = sorted(fs.glob(f"{root}/rejects/rejects-*.parquet"))
    sources = [fs.unstrip_protocol(p) if "://" in output else p for p in sources]
    shards = list_shard_files(f"{output}/shards") if fs.exists(f"{root}/shards") else []
    extra = [f for f in read_shard(shards[0]).schema if f.name not in SHARD_SCHEMA.names] if shards else []
    return sources, extra


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (huggingface_hub would otherwise retry for minutes)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _offline_if_unreachable(config: DetectorConfig) -> DetectorConfig:
    """Hub ids load from the local cache only when the hub cannot be reached: fail (or succeed) at once."""
    if config.model == TINY_DETECTOR or Path(config.model).expanduser().exists() or config.local_files_only:
        return config
    if _hub_reachable():
        return config
    LOGGER.info(
        "the Hugging Face hub cannot be reached: looking for %s in the local cache only", config.model
    )
    return replace(config, local_files_only=True)


def _load_detector_provenance(config: DetectorConfig, fallback, local: bool) -> tuple[DetectorConfig, dict]:
    """Load the detector once here (local runs) so an unavailable model fails now, in one line."""
    if not local:  # remote workers load it; this machine may not have it, or a GPU
        return config, config.provenance()
    config = _offline_if_unreachable(config)
    try:
        detector = load_detector(config)
    except DetectorUnavailableError as err:
        if fallback is None:
            raise BuildError(
                f"{err}. For an offline smoke run of every stage, add --detector {TINY_DETECTOR}"
            ) from err
        LOGGER.warning(
            "detector %s cannot be loaded here (%s); using %s instead", config.model, err, fallback.model
        )
        config, detector = fallback, load_detector(fallback)
    provenance = detector.provenance()
    del detector
    return config, provenance


def _provenance(config, text_provenance: dict, detector_provenance: dict) -> dict:
    return {
        "pipeline_version": grit_pipeline.__version__,
        "shard_schema": f"shard/{SHARD_SCHEMA_VERSION}",
        "num_patches_per_side": NUM_PATCHES_PER_SIDE,
        **text_provenance,
        **detector_provenance,
        "fetch": config.to_json()["fetch"],
    }


def _pick_runner(options):
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    name = options.view_as(StandardOptions).runner
    return FnApiRunner() if name in LOCAL_RUNNERS else None


def _resolve_inputs(args) -> tuple[list[str], str, InputConfig]:
    if args.retry_rejects:
        if args.input or args.example:
            raise BuildError(
                "--retry-rejects DIR reads DIR's rejects; do not pass --input or --example with it"
            )
        if args.output and _absolute(args.output) != _absolute(args.retry_rejects):
            raise BuildError(
                "--retry-rejects DIR writes into DIR; leave out --output or make it the same folder"
            )
        return [], _absolute(args.retry_rejects), input_config(args)
    if not args.output:
        raise BuildError("--output DIR is required")
    if args.example:
        if args.input:
            raise BuildError("--example uses the bundled example as input; do not pass --input with it")
        return [str(EXAMPLE_DIR / "captions.csv")], _absolute(args.output), EXAMPLE_INPUT
    if not args.input:
        raise BuildError("give --input PATH_OR_GLOB (or --example, or --retry-rejects DIR)")
    return list(args.input), _absolute(args.output), input_config(args)


@dataclass(frozen=True)
class PreparedRun:
    """A job ready to run: the pipeline with the whole graph, and the plan its commit follows."""

    pipeline: object
    plan: RunPlan
    local: bool
    files: tuple[str, ...]


def _check_remote_paths(inputs: list[str], output: str) -> None:
    local_paths = [p for p in [*inputs, output] if "://" not in p]
    if local_paths:
        raise BuildError(
            f"a remote runner's workers cannot reach this machine's files ({', '.join(local_paths)}): "
            "give gs://, s3://, hdfs:// ... paths (with the matching fsspec package installed)"
        )


def _todo(config, output: str, inputs: list[str]) -> tuple[list[str], list, list[str]]:
    """(files to read, shard extra fields, rejects files retried) for the run mode."""
    if config.retry_rejects:
        sources, extra_fields = _retry_plan(output)
        return sources, extra_fields, sources
    files = _input_files(inputs)
    check_input_files(list(files), config.input)  # unreadable files, wrong columns: one line, before anything
    todo, skipped = prepare(output, config.mode, files)
    if skipped:
        LOGGER.info("incremental: %d input file(s) already finished, skipped", len(skipped))
    return todo, (keep_column_fields(todo[0], config.input) if todo else []), []


def prepare_run(args, *, test_pipeline=None) -> PreparedRun | None:
    """Check everything, apply the output mode and build the graph; None when nothing is left to do."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from grit_pipeline.beam_jobs.pipeline import build_graph

    options = test_pipeline.options if test_pipeline is not None else PipelineOptions(args.beam_argv or [])
    runner = None if test_pipeline is not None else _pick_runner(options)
    local = test_pipeline is not None or runner is not None
    inputs, output, in_config = _resolve_inputs(args)
    if not local:
        _check_remote_paths(inputs, output)
    try:
        config = build_config(args, inputs, output, in_config)
        todo, extra_fields, retry_sources = _todo(config, output, inputs)
        if not todo:
            LOGGER.info("nothing to do: every input of %s is finished", output)
            return None
        text_provenance = TextStage(config.text).provenance()
    except (ValueError, OSError, InputError, OutputExistsError, PipelineNotFoundError) as err:
        raise BuildError(str(err)) from err
    fallback = detector_config(args, args.detector_fallback) if args.detector_fallback else None
    detector, detector_provenance = _load_detector_provenance(config.detector, fallback, local)
    config = replace(config, detector=detector)
    plan = RunPlan(
        output=output,
        run_id=new_run_id(),
        started_at=time.time(),
        config=config.to_json(),
        provenance=_provenance(config, text_provenance, detector_provenance),
        beam_options=options.get_all_options(drop_default=True, retain_unknown_options=True),
        retry_sources=tuple(retry_sources),
        transient_reasons=tuple(sorted(TRANSIENT_REASONS)),
    )
    try:
        pipeline = (
            test_pipeline if test_pipeline is not None else beam.Pipeline(runner=runner, options=options)
        )
    except ValueError as err:  # Beam's option validation (e.g. Dataflow without a project)
        raise BuildError(str(err).replace("\n", " ")) from err
    retry_reasons = plan.transient_reasons if config.retry_rejects else ()
    build_graph(pipeline, config, plan, todo, extra_fields, retry_reasons)
    return PreparedRun(pipeline, plan, local, tuple(todo))


def launch(args, *, test_pipeline=None) -> int:
    """Run the job for parsed arguments; raises BuildError for user errors."""
    _configure_logging()
    prepared = prepare_run(args, test_pipeline=test_pipeline)
    if prepared is None:
        return 0
    LOGGER.info(
        "run %s: %d input file(s) -> %s", prepared.plan.run_id, len(prepared.files), prepared.plan.output
    )
    progress.reset()  # counts of this run only, when several runs share a process
    try:
        result = prepared.pipeline.run()
        if prepared.local:
            result.wait_until_finish()
    finally:
        progress.reset()
    if prepared.local:
        _report(prepared.plan.output, prepared.plan.run_id)
    else:
        LOGGER.info("submitted; the run commits its output and manifest.json when the pipeline finishes")
    return 0


def _report(output: str, run_id: str) -> None:
    manifest = load_manifest(output) or {}
    run = next((r for r in manifest.get("runs", []) if r["run_id"] == run_id), None)
    if run is None:
        raise BuildError(f"the run finished but {output}/manifest.json does not record it")
    counts = run["counts"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts["by_reason"].items(), key=lambda kv: -kv[1]))
    LOGGER.info(
        "done in %.1f s: %d rows in, %d accepted, %d rejected%s; shards in %s/shards",
        run["timings"]["wall_s"],
        counts["input"],
        counts["accepted"],
        counts["rejected"],
        f" ({reasons})" if reasons else "",
        output,
    )


def run(argv: list[str] | None = None, *, test_pipeline=None) -> int:
    """The job's entry point: argv in, exit status out (2 and one line for a user error)."""
    parser = argparse.ArgumentParser(
        prog="grit build", description="image-text pairs in, GRIT Parquet shards out"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return launch(args, test_pipeline=test_pipeline)
    except BuildError as err:
        print(f"grit build: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    sys.exit(run())
