"""The plain records that travel between the job's stages (picklable, no Beam inside)."""

from __future__ import annotations

from dataclasses import dataclass, field

from grit_pipeline.fetch import FetchedImage
from grit_pipeline.grounding.batching import batch_figures
from grit_pipeline.inputs import InputRow
from grit_pipeline.schemas import reject_row
from grit_pipeline.text import ParsedCaption

REJECTS = "rejects"  # tag of every stage's rejects output
STATS = "stats"  # tag of the bookkeeping outputs (files read, stage timings)


@dataclass(frozen=True)
class Row:
    """An input row and what the stages have added to it so far."""

    input: InputRow
    parsed: ParsedCaption | None = None
    fetched: FetchedImage | None = None

    @property
    def key(self) -> str:
        return self.input.key

    def reject(self, stage: str, reason: str, error: str | None = None) -> dict:
        """The rejects row that ends this row's journey."""
        return rejected(self.input, stage, reason, error)


def rejected(row: InputRow, stage: str, reason: str, error: str | None = None) -> dict:
    return reject_row(row.key, row.url, row.caption, stage, reason, error, row.fields)


@dataclass(frozen=True)
class FileRead:
    """An input file was read to its end: how many rows it held."""

    path: str
    rows: int
    size_bytes: int | None


@dataclass(frozen=True)
class StageTime:
    """Seconds one worker spent in one stage during one bundle, and the rows it handled (0: not counted)."""

    stage: str
    seconds: float
    rows: int = 0


@dataclass(frozen=True)
class StagedFile:
    """A Parquet file written under the run's staging folder, waiting for the commit."""

    kind: str  # "shards" or "rejects"
    path: str
    rows: int
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchStats:
    """What one worker's detector ran during one bundle: images, batches, the shapes of the batches."""

    images: int
    batches: int
    shapes: tuple[tuple[int, int], ...]  # (height, width); a list of lists once read from sealed.json
    batch_size: int  # the configured --detector-batch-size


def run_batch_figures(items) -> dict:
    """The run's batch figures over every ``BatchStats`` in ``items`` (zeros when nothing was grounded)."""
    stats = [i for i in items if isinstance(i, BatchStats)]
    shapes = {tuple(shape) for s in stats for shape in s.shapes}
    batch_size = max((s.batch_size for s in stats), default=0)
    images, batches = sum(s.images for s in stats), sum(s.batches for s in stats)
    return batch_figures(images, batches, len(shapes), batch_size)
