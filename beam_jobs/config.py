"""The job's configuration: one frozen record holding every stage's options, saved in the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from grit_pipeline.fetch import FetchConfig
from grit_pipeline.grounding import DetectorConfig
from grit_pipeline.inputs import InputConfig
from grit_pipeline.text import TextConfig

MODES = ("refuse", "incremental", "overwrite")
DEDUP_KEYS = ("url", "sha256", "none")


class BuildError(Exception):
    """A one-line user error (bad input, output exists or locked, detector unavailable)."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything `grit build` was asked to do (Beam's own options travel separately)."""

    inputs: tuple[str, ...]  # files, folders or globs; empty for --retry-rejects
    output: str
    input: InputConfig = field(default_factory=InputConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    text: TextConfig = field(default_factory=TextConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    # Used instead of ``detector`` when that cannot be loaded on the launching machine.
    detector_fallback: DetectorConfig | None = None
    # refuse: stop when OUTPUT already holds a build; incremental: only inputs not finished yet;
    # overwrite: delete the previous build first.
    mode: str = "refuse"
    retry_rejects: bool = False  # re-run the transient rejects of OUTPUT instead of reading inputs
    dedup: str = "url"  # first occurrence (smallest key) wins; the others are rejects `duplicate`
    # 2,000 rows of 512 px JPEGs make shards of about 100 MB: large enough for efficient reads,
    # small enough to write from one worker's memory.
    rows_per_shard: int = 2000
    store_images: bool = True
    progress_interval_s: float = 10.0
    # Longest time a row may wait for its grounding batch to fill. None: batches close when full or
    # when the bundle ends, which bounds the wait in batch jobs; set it for streaming inputs.
    max_batch_wait_s: float | None = None
    break_lock: bool = False  # take OUTPUT's lock even when another run holds it (see beam_jobs.lock)
    # A job none of whose workers has reported after this long is cancelled (exit 1): a worker
    # environment that cannot start would otherwise leave the launcher waiting forever. 15 min
    # covers a cold Dataflow VM pulling a multi-GB worker image; 0 waits forever.
    worker_start_timeout_s: float = 900.0
    # Beam's accelerator resource hint for the ground step alone, e.g.
    # "type:nvidia-l4;count:1;install-nvidia-driver" (Dataflow); None: no hint.
    ground_accelerator: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dedup not in DEDUP_KEYS:
            raise ValueError(f"dedup must be one of {DEDUP_KEYS}, got {self.dedup!r}")
        if self.max_batch_wait_s is not None and self.max_batch_wait_s <= 0:
            raise ValueError(f"max batch wait must be > 0 seconds, got {self.max_batch_wait_s}")
        if self.worker_start_timeout_s < 0:
            raise ValueError(f"worker start timeout must be >= 0 seconds, got {self.worker_start_timeout_s}")
        if self.rows_per_shard < 1:
            raise ValueError(f"rows per shard must be >= 1, got {self.rows_per_shard}")

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
