"""`grit build`'s command line: the job's own options, Beam's pipeline options, and the config they make.

The job's options are the configs' declared flags (``grit_pipeline.flags``): ``BuildConfig``'s own,
``InputConfig``'s, ``DetectorConfig``'s, ``TextConfig``'s and ``FetchConfig``'s, the same
declarations `grit ground` and `grit audit` use, so each has one name and one default everywhere.
Beam's options (``--runner``, ``--direct_running_mode``, ``--project``, ...) are declared on the
same parser, copied from every ``PipelineOptions`` class, so a typo in either kind is an error
rather than being passed on and ignored. They are recorded as given and parsed by Beam itself.

``build_config(args)`` is the one boundary between the command line and the job: it resolves
``--example`` and ``--retry-rejects`` and returns a complete ``BuildConfig``; nothing after it
reads the argparse Namespace.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import grit_pipeline
from grit_pipeline.beam_jobs.config import BuildConfig, BuildError
from grit_pipeline.fetch import FetchConfig
from grit_pipeline.filesystems import check_file_systems
from grit_pipeline.flags import add_flags, from_flags
from grit_pipeline.grounding import DetectorConfig
from grit_pipeline.inputs import InputConfig
from grit_pipeline.text import TextConfig

BEAM_ARGV = "beam_argv"
EXAMPLE_DIR = Path(grit_pipeline.__file__).parent / "example_input"
EXAMPLE_INPUT = InputConfig(image_path_column="image_path", keep_columns=("licence", "credit"))
# BuildConfig's flags listed with the detector's rather than with the inputs'.
GROUNDING_FIELDS = ("detector_fallback", "max_batch_wait_s", "ground_accelerator")


class _BeamFlag(argparse.Action):
    """Records a Beam option as written, for ``PipelineOptions(flags)`` to parse later."""

    def __call__(self, parser, namespace, values, option_string=None):
        argv = list(getattr(namespace, BEAM_ARGV, None) or [])
        if self.nargs == 0:
            argv.append(option_string)
        elif isinstance(values, list):
            argv += [option_string, *map(str, values)]
        else:
            argv.append(f"{option_string}={values}")
        setattr(namespace, BEAM_ARGV, argv)


def add_beam_options(parser: argparse.ArgumentParser) -> None:
    """Declare every Beam pipeline option on ``parser`` (hidden from --help, listed in its epilog)."""
    from grit_pipeline.beam_jobs.beam_api import beam_option_actions, option_strings

    taken = option_strings(parser)
    for action in beam_option_actions():
        strings = [s for s in action.option_strings if s.startswith("--") and s not in taken]
        if not strings:
            continue
        parser.add_argument(
            *strings,
            action=_BeamFlag,
            dest=BEAM_ARGV,
            nargs=0 if action.nargs == 0 else action.nargs,
            choices=action.choices,
            default=None,
            help=argparse.SUPPRESS,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `grit build`'s options: the two ways of naming inputs, every config's flags, Beam's."""
    parser.epilog = (
        "Beam pipeline options are accepted as well (for example --runner DataflowRunner, "
        "--direct_running_mode multi_processing --direct_num_workers 4, --project, --region, "
        "--temp_location, --setup_file, --flink_master, --spark_master_url); see the README's runner recipes."
    )
    where = parser.add_argument_group("input and output")
    where.add_argument(
        "--example", action="store_true", help="use the bundled example (5 photos with captions) as input"
    )
    where.add_argument(
        "--retry-rejects",
        metavar="DIR",
        help="re-run the rows DIR rejected for transient reasons (timeouts, 5xx, connection errors) into DIR",
    )
    add_flags(where, BuildConfig, skip=GROUNDING_FIELDS)
    add_flags(where, InputConfig)
    grounding = parser.add_argument_group("grounding")
    add_flags(grounding, DetectorConfig)
    add_flags(grounding, BuildConfig, only=GROUNDING_FIELDS)
    add_flags(parser.add_argument_group("text"), TextConfig)
    add_flags(parser.add_argument_group("download"), FetchConfig)
    add_beam_options(parser)


def _detectors(args) -> tuple[DetectorConfig, DetectorConfig | None]:
    """The detector and its fallback: the same options, each its own model (and so its default threshold)."""
    threads = worker_threads(args)
    detector = from_flags(DetectorConfig, args, threads=threads)
    if not args.detector_fallback:
        return detector, None
    return detector, from_flags(DetectorConfig, args, model=args.detector_fallback, threads=threads)


def worker_threads(args) -> int:
    """torch threads per worker: --detector-threads, else this machine's usable cores shared by the
    job's SDK processes on it (``runners.sdk_processes_on_this_machine``: one pool per process taking
    every core made multi_processing runs 30-50x slower); 0 where the options cannot say (remote
    runners, clusters): each worker then takes its share of its own machine when it starts."""
    if args.detector_threads is not None:
        if args.detector_threads < 1:
            raise ValueError(f"--detector-threads must be >= 1, got {args.detector_threads}")
        return args.detector_threads
    from apache_beam.options.pipeline_options import PipelineOptions

    from grit_pipeline.beam_jobs.runners import sdk_processes_on_this_machine
    from grit_pipeline.grounding.devices import threads_per_process, usable_cores

    processes = sdk_processes_on_this_machine(PipelineOptions(getattr(args, BEAM_ARGV, None) or []))
    return 0 if processes is None else threads_per_process(usable_cores(), processes)


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _where(args) -> tuple[tuple[str, ...], str, InputConfig]:
    """(input paths, output, how to read them) for the three ways of naming inputs."""
    if args.retry_rejects:
        if args.input or args.example:
            raise BuildError(
                "--retry-rejects DIR reads DIR's rejects; do not pass --input or --example with it"
            )
        if args.output and _absolute(args.output) != _absolute(args.retry_rejects):
            raise BuildError(
                "--retry-rejects DIR writes into DIR; leave out --output or make it the same folder"
            )
        return (), _absolute(args.retry_rejects), from_flags(InputConfig, args)
    if not args.output:
        raise BuildError("--output DIR is required")
    if args.example:
        if args.input:
            raise BuildError("--example uses the bundled example as input; do not pass --input with it")
        return (str(EXAMPLE_DIR / "captions.csv"),), _absolute(args.output), EXAMPLE_INPUT
    if not args.input:
        raise BuildError("give --input PATH_OR_GLOB (or --example, or --retry-rejects DIR)")
    return tuple(args.input), _absolute(args.output), from_flags(InputConfig, args)


def build_config(args) -> BuildConfig:
    """The complete BuildConfig of parsed arguments: the one boundary between argv and the job.

    Raises BuildError (one line, naming the flag) on inconsistent or invalid values.
    """
    try:
        paths, output, how = _where(args)
        check_file_systems([*paths, output])  # before the lock writes anything into OUTPUT
        detector, fallback = _detectors(args)
        return from_flags(
            BuildConfig,
            args,
            input_paths=paths,
            output=output,
            input_options=how,
            fetch=from_flags(FetchConfig, args),
            text=from_flags(TextConfig, args),
            detector=detector,
            detector_fallback=fallback,
            retry_rejects=bool(args.retry_rejects),
        )
    except ValueError as err:  # the configs' own checks
        raise BuildError(str(err)) from err
