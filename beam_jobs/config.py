"""The job's configuration: one frozen record holding every stage's options, saved in the manifest.

Its own fields declare `grit build`'s job flags (``grit_pipeline.flags``); the stages' configs
declare theirs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from grit_pipeline.fetch import FetchConfig
from grit_pipeline.flags import flag, require_choice, require_min, require_positive
from grit_pipeline.grounding import DetectorConfig
from grit_pipeline.inputs import InputConfig
from grit_pipeline.text import TextConfig

MODES = ("refuse", "incremental", "overwrite")
DEDUP_KEYS = ("url", "sha256", "none")


class BuildError(Exception):
    """A one-line user error (bad input, output exists or locked, detector unavailable)."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything `grit build` was asked to do (Beam's own options travel separately).

    ``input_paths`` names the input files; ``input_options`` says how to read them.
    """

    # `grit build` resolves --output with --retry-rejects DIR (the same folder), hence not required there.
    output: str = flag(name="--output", metavar="DIR", required=False, help="output folder (any fsspec URL)")
    input_paths: tuple[str, ...] = flag(  # files, folders or globs; empty for --retry-rejects
        (),
        name="--input",
        metavar="PATH_OR_GLOB",
        help="input file, folder or glob (repeatable; any fsspec URL)",
    )
    input_options: InputConfig = field(default_factory=InputConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    text: TextConfig = field(default_factory=TextConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    # Used instead of ``detector`` when that cannot be loaded on the launching machine: the same
    # options with another model (the flag names the model).
    detector_fallback: DetectorConfig | None = flag(
        None,
        type=str,
        metavar="ID_OR_DIR",
        help="used instead when --detector cannot be loaded here (e.g. 'tiny-random' offline)",
    )
    # refuse: stop when OUTPUT already holds a build; incremental: only inputs not finished yet;
    # overwrite: delete the previous build first.
    mode: str = flag(
        "refuse",
        choices=MODES,
        help="when OUTPUT holds a build: refuse (default), incremental (only unfinished inputs) or overwrite",
    )
    retry_rejects: bool = False  # re-run the transient rejects of OUTPUT instead of reading inputs
    # First occurrence (smallest key) wins; the others are rejects `duplicate`.
    dedup: str = flag(
        "url",
        choices=DEDUP_KEYS,
        help="drop repeated URLs (default) or identical images (sha256) as `duplicate` rejects",
    )
    # 2,000 rows of 512 px JPEGs make shards of about 100 MB: large enough for efficient reads,
    # small enough to write from one worker's memory.
    rows_per_shard: int = flag(2000, help="rows per output shard")
    store_images: bool = flag(
        True, name="--no-images", help="do not store image bytes in the shards (GRIT-20M style)"
    )
    progress_interval_s: float = flag(
        10.0, name="--progress-interval", metavar="S", help="seconds between progress lines (0: none)"
    )
    # Longest time a row may wait for its grounding batch to fill. None: batches close when full or
    # when the bundle ends, which bounds the wait in batch jobs; set it for streaming inputs.
    max_batch_wait_s: float | None = flag(
        None,
        name="--max-batch-wait",
        metavar="S",
        help="close a grounding batch after S seconds even when not full (Beam's stateful batching, "
        "for streaming inputs); default: batches close when full or when the bundle ends",
    )
    # Take OUTPUT's lock even when another run holds it (see beam_jobs.lock).
    break_lock: bool = flag(
        False,
        help="take OUTPUT's lock although another run holds it (only when that run is known to be dead)",
    )
    # A job none of whose workers has reported after this long is cancelled (exit 1): a worker
    # environment that cannot start would otherwise leave the launcher waiting forever. 15 min
    # covers a cold Dataflow VM pulling a multi-GB worker image; 0 waits forever.
    worker_start_timeout_s: float = flag(
        900.0,
        name="--worker-start-timeout",
        metavar="S",
        help="cancel the job (exit 1) when no SDK worker has reported after S seconds (0: wait forever)",
    )
    # Beam's accelerator resource hint for the ground step alone; None: no hint.
    ground_accelerator: str | None = flag(
        None,
        metavar="SPEC",
        help="Beam accelerator resource hint for the ground step only, e.g. "
        "'type:nvidia-l4;count:1;install-nvidia-driver' (Dataflow); see the README's GPU recipe",
    )

    def __post_init__(self) -> None:
        require_choice(self, mode=MODES, dedup=DEDUP_KEYS)
        require_min(self, rows_per_shard=1, progress_interval_s=0, worker_start_timeout_s=0)
        require_positive(self, "max_batch_wait_s")

    def to_json(self) -> dict:
        """Plain JSON values (sets become sorted lists), for the manifest."""
        return _plain(asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
