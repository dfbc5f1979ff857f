"""`grit build`'s command line: the job's own options, Beam's pipeline options, and the config they make.

Beam's options (``--runner``, ``--direct_running_mode``, ``--project``, ...) are declared on the
same parser, copied from every ``PipelineOptions`` class, so a typo in either kind is an error
rather than being passed on and ignored. They are recorded as given and parsed by Beam itself.

``build_config(args)`` is the one boundary between the command line and the job: it resolves
``--example`` and ``--retry-rejects`` and returns a complete ``BuildConfig``; nothing after it
reads the argparse Namespace. Option defaults are the dataclasses' own values.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import grit_pipeline
from grit_pipeline.beam_jobs.config import DEDUP_KEYS, MODES, BuildConfig, BuildError
from grit_pipeline.fetch import BOX_SAFE_RESIZE_MODES, FetchConfig
from grit_pipeline.filesystems import check_file_systems
from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig
from grit_pipeline.grounding.config import IMAGE_SOURCES
from grit_pipeline.inputs import IMG2DATASET_RESIZE_MODES, INPUT_FORMATS, InputConfig
from grit_pipeline.text import TextConfig

# The tiny random detector's scores sit near 0.5 (see grounding.config), so the paper's 0.65
# would keep no box; smoke runs with it use this threshold unless --box-threshold is given.
TINY_BOX_THRESHOLD = 0.3
BEAM_ARGV = "beam_argv"
EXAMPLE_DIR = Path(grit_pipeline.__file__).parent / "examples"
EXAMPLE_INPUT = InputConfig(image_path_column="image_path", keep_columns=("licence", "credit"))


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
    # Beam's GCP modules warn at import time that apitools is missing (only Dataflow needs it,
    # through the [gcp] extra); that line on every `grit build` would only confuse.
    logging.disable(logging.WARNING)
    try:
        from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    finally:
        logging.disable(logging.NOTSET)

    beam_parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(beam_parser)
    taken = {s for action in parser._actions for s in action.option_strings}
    for action in beam_parser._actions:
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
    parser.epilog = (
        "Beam pipeline options are accepted as well (for example --runner DataflowRunner, "
        "--direct_running_mode multi_processing --direct_num_workers 4, --project, --region, "
        "--temp_location, --setup_file, --flink_master, --spark_master_url); see the README's runner recipes."
    )
    _add_input_options(parser)
    _add_grounding_options(parser)
    _add_text_options(parser)
    _add_fetch_options(parser)
    add_beam_options(parser)


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """Inputs, output, run modes and bookkeeping."""
    where = parser.add_argument_group("input and output")
    where.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="PATH_OR_GLOB",
        help="input file, folder or glob (repeatable; any fsspec URL)",
    )
    where.add_argument("--output", metavar="DIR", help="output folder (any fsspec URL)")
    where.add_argument(
        "--example", action="store_true", help="use the bundled example (5 photos with captions) as input"
    )
    where.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default=InputConfig.input_format,
        help="auto: img2dataset when files hold image bytes, else url tables",
    )
    where.add_argument("--url-column", default=InputConfig.url_column)
    where.add_argument("--caption-column", default=InputConfig.caption_column)
    where.add_argument(
        "--key-column", default=InputConfig.key_column, help="default: 'key' when present, else FILE_STEM-ROW"
    )
    where.add_argument(
        "--image-path-column",
        default=InputConfig.image_path_column,
        help="column of local image paths to read instead of downloading (URLs there are refused)",
    )
    where.add_argument(
        "--image-root",
        default=InputConfig.image_root,
        metavar="DIR",
        help="folder the --image-path-column paths are relative to (default: each table's own folder)",
    )
    where.add_argument(
        "--img2dataset-resize-mode",
        choices=IMG2DATASET_RESIZE_MODES,
        default=InputConfig.img2dataset_resize_mode,
        help="how img2dataset resized the inputs (it does not record it); auto rejects square images "
        "of non-square originals, which border and center_crop both make",
    )
    where.add_argument("--keep-columns", default="", metavar="A,B", help="input columns copied to the shards")
    where.add_argument(
        "--mode",
        choices=MODES,
        default=BuildConfig.mode,
        help="when OUTPUT holds a build: refuse (default), incremental (only unfinished inputs) or overwrite",
    )
    where.add_argument(
        "--retry-rejects",
        metavar="DIR",
        help="re-run the rows DIR rejected for transient reasons (timeouts, 5xx, connection errors) into DIR",
    )
    where.add_argument(
        "--dedup",
        choices=DEDUP_KEYS,
        default=BuildConfig.dedup,
        help="drop repeated URLs (default) or identical images (sha256) as `duplicate` rejects",
    )
    where.add_argument("--rows-per-shard", type=int, default=BuildConfig.rows_per_shard)
    where.add_argument(
        "--no-images", action="store_true", help="do not store image bytes in the shards (GRIT-20M style)"
    )
    where.add_argument(
        "--progress-interval",
        type=float,
        default=BuildConfig.progress_interval_s,
        metavar="S",
        help="seconds between progress lines (0: none)",
    )
    where.add_argument(
        "--worker-start-timeout",
        type=float,
        default=BuildConfig.worker_start_timeout_s,
        metavar="S",
        help="cancel the job (exit 1) when no SDK worker has reported after S seconds (0: wait forever)",
    )
    where.add_argument(
        "--break-lock",
        action="store_true",
        help="take OUTPUT's lock although another run holds it (only when that run is known to be dead)",
    )


def _add_grounding_options(parser: argparse.ArgumentParser) -> None:
    """The detector, its thresholds and batching."""
    det = parser.add_argument_group("grounding")
    det.add_argument(
        "--detector",
        default=DetectorConfig.model,
        metavar="ID_OR_DIR",
        help=f"hub id, local folder, or {TINY_DETECTOR!r} (offline smoke runs)",
    )
    det.add_argument(
        "--detector-fallback",
        default=None,
        metavar="ID_OR_DIR",
        help=f"used instead when --detector cannot be loaded here (e.g. {TINY_DETECTOR!r} offline)",
    )
    det.add_argument("--detector-backend", choices=("hf", "groundingdino"), default=DetectorConfig.backend)
    det.add_argument(
        "--box-threshold",
        type=float,
        default=None,
        help=f"default {DetectorConfig.box_threshold} (the paper's); {TINY_BOX_THRESHOLD} with {TINY_DETECTOR!r}",
    )
    det.add_argument("--nms-iou", type=float, default=DetectorConfig.nms_iou)
    det.add_argument("--detector-batch-size", type=int, default=DetectorConfig.batch_size)
    det.add_argument("--device", default=DetectorConfig.device)
    det.add_argument(
        "--max-batch-wait",
        type=float,
        default=BuildConfig.max_batch_wait_s,
        metavar="S",
        help="close a grounding batch after S seconds even when not full (Beam's stateful batching, "
        "for streaming inputs); default: batches close when full or when the bundle ends",
    )
    det.add_argument(
        "--detector-image",
        choices=IMAGE_SOURCES,
        default=DetectorConfig.image_source,
        help="what the detector sees: the downloaded image decoded at about its input size (source, "
        "default) or the stored resized copy (stored: less CPU for large photos, less detail)",
    )
    det.add_argument(
        "--ground-accelerator",
        default=None,
        metavar="SPEC",
        help="Beam accelerator resource hint for the ground step only, e.g. "
        "'type:nvidia-l4;count:1;install-nvidia-driver' (Dataflow); see the README's GPU recipe",
    )
    det.add_argument(
        "--detector-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per worker process (default: the cores each process may use, divided by the "
        "SDK processes of its machine, on every runner)",
    )


def _add_text_options(parser: argparse.ArgumentParser) -> None:
    """The text stage."""
    text = parser.add_argument_group("text")
    text.add_argument("--spacy-model", default=TextConfig.spacy_model, help="installed pipeline name or path")
    text.add_argument("--max-caption-chars", type=int, default=TextConfig.max_caption_chars)


def _add_fetch_options(parser: argparse.ArgumentParser) -> None:
    """Downloads, their guards and the stored image."""
    fetch = parser.add_argument_group("download")
    fetch.add_argument("--timeout", type=float, default=FetchConfig.timeout_s, metavar="S")
    fetch.add_argument("--retries", type=int, default=FetchConfig.retries)
    fetch.add_argument("--backoff", type=float, default=FetchConfig.backoff_s, metavar="S")
    fetch.add_argument("--total-timeout", type=float, default=FetchConfig.total_timeout_s, metavar="S")
    fetch.add_argument("--max-retry-after", type=float, default=FetchConfig.max_retry_after_s, metavar="S")
    fetch.add_argument(
        "--max-host-connections", type=int, default=FetchConfig.max_host_connections, metavar="N"
    )
    fetch.add_argument(
        "--max-host-rate", type=float, default=FetchConfig.max_host_requests_per_s, metavar="R"
    )
    fetch.add_argument(
        "--threads", type=int, default=FetchConfig.thread_count, help="downloads in flight per worker"
    )
    fetch.add_argument("--max-bytes", type=int, default=FetchConfig.max_bytes)
    fetch.add_argument("--max-pixels", type=int, default=FetchConfig.max_pixels)
    fetch.add_argument(
        "--allow-private-addresses",
        action="store_true",
        help="allow loopback/private/link-local targets (tests, private mirrors)",
    )
    fetch.add_argument(
        "--allow-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="exempt one network from the address guard (repeatable)",
    )
    fetch.add_argument("--image-size", type=int, default=FetchConfig.image_size)
    fetch.add_argument("--resize-mode", choices=BOX_SAFE_RESIZE_MODES, default=FetchConfig.resize_mode)
    fetch.add_argument("--encode-quality", type=int, default=FetchConfig.encode_quality)


def detector_config(args, model: str) -> DetectorConfig:
    threshold = args.box_threshold
    if threshold is None:
        threshold = TINY_BOX_THRESHOLD if model == TINY_DETECTOR else DetectorConfig.box_threshold
    return DetectorConfig(
        model=model,
        backend=args.detector_backend,
        box_threshold=threshold,
        nms_iou=args.nms_iou,
        batch_size=args.detector_batch_size,
        device=args.device,
        image_source=args.detector_image,
        threads=worker_threads(args),
    )


def worker_threads(args) -> int:
    """torch threads per worker: --detector-threads, else this machine's cores shared by Beam's local
    workers (one pool per process taking every core made multi_processing runs 30-50x slower);
    0 (torch's default) for remote runners, whose machines we cannot see from here."""
    if args.detector_threads is not None:
        if args.detector_threads < 1:
            raise ValueError(f"--detector-threads must be >= 1, got {args.detector_threads}")
        return args.detector_threads
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(getattr(args, BEAM_ARGV, None) or [])
    if options.view_as(StandardOptions).runner not in (
        None,
        "DirectRunner",
        "SwitchingDirectRunner",
        "FnApiRunner",
    ):
        return 0
    direct = options.view_as(DirectOptions)
    cores = os.cpu_count() or 1
    workers = 1 if direct.direct_running_mode in (None, "in_memory") else direct.direct_num_workers or cores
    return max(1, cores // workers)


def fetch_config(args) -> FetchConfig:
    return FetchConfig(
        timeout_s=args.timeout,
        retries=args.retries,
        backoff_s=args.backoff,
        total_timeout_s=args.total_timeout,
        max_retry_after_s=args.max_retry_after,
        max_host_connections=args.max_host_connections,
        max_host_requests_per_s=args.max_host_rate,
        thread_count=args.threads,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        allow_private_addresses=args.allow_private_addresses,
        allowed_networks=tuple(args.allow_network),
        image_size=args.image_size,
        resize_mode=args.resize_mode,
        encode_quality=args.encode_quality,
    )


def input_config(args) -> InputConfig:
    keep = tuple(c.strip() for c in args.keep_columns.split(",") if c.strip())
    return InputConfig(
        url_column=args.url_column,
        caption_column=args.caption_column,
        key_column=args.key_column,
        keep_columns=keep,
        input_format=args.input_format,
        image_path_column=args.image_path_column,
        image_root=args.image_root,
        img2dataset_resize_mode=args.img2dataset_resize_mode,
    )


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _where(args) -> tuple[tuple[str, ...], str, InputConfig]:
    """(inputs, output, how to read them) for the three ways of naming inputs."""
    if args.retry_rejects:
        if args.input or args.example:
            raise BuildError(
                "--retry-rejects DIR reads DIR's rejects; do not pass --input or --example with it"
            )
        if args.output and _absolute(args.output) != _absolute(args.retry_rejects):
            raise BuildError(
                "--retry-rejects DIR writes into DIR; leave out --output or make it the same folder"
            )
        return (), _absolute(args.retry_rejects), input_config(args)
    if not args.output:
        raise BuildError("--output DIR is required")
    if args.example:
        if args.input:
            raise BuildError("--example uses the bundled example as input; do not pass --input with it")
        return (str(EXAMPLE_DIR / "captions.csv"),), _absolute(args.output), EXAMPLE_INPUT
    if not args.input:
        raise BuildError("give --input PATH_OR_GLOB (or --example, or --retry-rejects DIR)")
    return tuple(args.input), _absolute(args.output), input_config(args)


def build_config(args) -> BuildConfig:
    """The complete BuildConfig of parsed arguments: the one boundary between argv and the job.

    Raises BuildError (one line) on inconsistent or invalid values.
    """
    try:
        inputs, output, how = _where(args)
        check_file_systems([*inputs, output])  # before the lock writes anything into OUTPUT
        return BuildConfig(
            inputs=inputs,
            output=output,
            input=how,
            fetch=fetch_config(args),
            text=TextConfig(spacy_model=args.spacy_model, max_caption_chars=args.max_caption_chars),
            detector=detector_config(args, args.detector),
            detector_fallback=(
                detector_config(args, args.detector_fallback) if args.detector_fallback else None
            ),
            mode=args.mode,
            retry_rejects=bool(args.retry_rejects),
            dedup=args.dedup,
            rows_per_shard=args.rows_per_shard,
            store_images=not args.no_images,
            progress_interval_s=args.progress_interval,
            max_batch_wait_s=args.max_batch_wait,
            break_lock=args.break_lock,
            worker_start_timeout_s=args.worker_start_timeout,
            ground_accelerator=args.ground_accelerator,
        )
    except ValueError as err:  # the dataclasses' own checks
        raise BuildError(str(err)) from err
