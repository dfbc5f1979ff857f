"""Streaming batches from shards: a deterministic shuffled order, worker processes, exact resume.

The order of rows is a pure function of (seed, epoch): shards in a seeded permutation, rows
streamed through a seeded shuffle buffer of ``(shard, row)`` indices (cheap integers, so
skipping ahead on resume costs no image decoding). Global batch ``b`` holds the rows at
positions ``[b * B, (b + 1) * B)`` of that order; under DDP rank ``r`` takes the batches with
``b % world == r``, and within a rank DataLoader worker ``w`` builds every ``num_workers``-th of
them. DataLoader hands out worker batches round-robin, so the batches arrive in the same order
for any number of workers, and resuming at batch ``b`` is exact. Each row's randomness (grounded
or plain) is seeded by its position in the stream, not by the worker that happens to build it.

Rows come from our shards (image bytes in ``image``), img2dataset parquet output (bytes in
``jpg``/``png``/``webp``) or GRIT-20M parquet with an img2dataset ``files`` folder (``--images``;
image ``<key>.<ext>`` anywhere below it).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from grit_pipeline.model.examples import IGNORE_INDEX, Example, ExampleConfig, SkipRow, make_example
from grit_pipeline.schemas.reader import list_shard_files, read_shard
from grit_pipeline.schemas.shard import IMAGE_COLUMNS, image_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
LOGGER = logging.getLogger(__name__)
NAMED_SKIPS_PER_REASON = 10  # skipped rows named in the log per reason and reader; the rest only counted


@dataclass(frozen=True)
class StreamConfig:
    """Where rows come from and in which order."""

    data: str  # shard file, folder or glob
    images: str | None = None  # img2dataset "files" output folder, for shards without image bytes
    batch_size: int = 32
    shuffle_buffer: int = 2048  # rows mixed across shard boundaries
    seed: int = 0
    num_workers: int = 0
    rank: int = 0  # DDP rank and world size: each rank takes every world-th batch
    world_size: int = 1
    cached_shards: int = 3  # shard tables kept in memory per worker (the buffer spans a few)


def shard_lengths(paths: list[str]) -> list[int]:
    """Row counts from the Parquet footers (no data read)."""
    import fsspec

    lengths = []
    for path in paths:
        with fsspec.open(path, "rb") as handle:
            lengths.append(pq.ParquetFile(handle).metadata.num_rows)
    return lengths


def epoch_order(lengths: list[int], seed: int, epoch: int, buffer_size: int) -> Iterator[tuple[int, int]]:
    """``(shard, row)`` pairs of one epoch: shards permuted, rows through a shuffle buffer."""
    rng = random.Random(f"{seed}:{epoch}")
    shards = list(range(len(lengths)))
    rng.shuffle(shards)
    buffer: list[tuple[int, int]] = []
    for shard in shards:
        for row in range(lengths[shard]):
            buffer.append((shard, row))
            if len(buffer) >= buffer_size:
                index = rng.randrange(len(buffer))
                buffer[index], buffer[-1] = buffer[-1], buffer[index]
                yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def row_stream(lengths: list[int], seed: int, buffer_size: int) -> Iterator[tuple[int, int, int]]:
    """``(epoch, shard, row)`` forever."""
    if sum(lengths) == 0:
        raise ValueError("the shards hold no rows")
    epoch = 0
    while True:
        for shard, row in epoch_order(lengths, seed, epoch, buffer_size):
            yield epoch, shard, row
        epoch += 1


class ImageFolder:
    """Image bytes by key from an img2dataset ``files`` output folder (``<key>.<ext>`` anywhere below)."""

    def __init__(self, root: str):
        self._paths = {p.stem: p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
        if not self._paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")

    def get(self, key: str) -> bytes | None:
        path = self._paths.get(key)
        return path.read_bytes() if path else None


class ShardRows:
    """Rows by ``(shard, row)``, keeping the last few shard tables in memory as Arrow (compact)."""

    COLUMNS = (*IMAGE_COLUMNS, "key", "caption", "ref_exps", "noun_chunks")

    def __init__(self, paths: list[str], images: str | None, cached: int):
        self._paths, self._cached = paths, cached
        self._tables: OrderedDict[int, pa.Table] = OrderedDict()
        self._folder = ImageFolder(images) if images else None

    def _table(self, shard: int) -> pa.Table:
        if shard not in self._tables:
            table = read_shard(self._paths[shard])
            self._tables[shard] = table.select([c for c in table.column_names if c in self.COLUMNS])
            while len(self._tables) > self._cached:
                self._tables.popitem(last=False)
        self._tables.move_to_end(shard)
        return self._tables[shard]

    def get(self, shard: int, row: int) -> dict:
        record = self._table(shard).slice(row, 1).to_pylist()[0]
        data = image_bytes(record)
        if data is None and self._folder is not None:
            data = self._folder.get(str(record["key"]))
        record["image"] = data
        return record


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest example; keys are exactly the model's keyword arguments plus ``labels``."""
    length = max(len(e.input_ids) for e in examples)

    def pad(values: list[int], fill: int) -> list[int]:
        return values + [fill] * (length - len(values))

    return {
        "pixel_values": torch.from_numpy(np.stack([e.pixel_values for e in examples])),
        "input_ids": torch.tensor([pad(e.input_ids, pad_id) for e in examples]),
        "attention_mask": torch.tensor([pad([1] * len(e.input_ids), 0) for e in examples]),
        "image_embeds_position_mask": torch.tensor([pad(e.image_embeds_position_mask, 0) for e in examples]),
        "labels": torch.tensor([pad(e.labels, IGNORE_INDEX) for e in examples]),
    }


class ShardBatches(IterableDataset):
    """Batches (dicts of tensors) in the deterministic stream order, starting at ``start_batch``."""

    def __init__(
        self, stream: StreamConfig, text: ExampleConfig, processor, num_slots: int, start_batch: int = 0
    ):
        self.stream, self.text, self.processor, self.num_slots = stream, text, processor, num_slots
        self.start_batch = start_batch
        self.paths = list_shard_files(stream.data)
        if not self.paths:
            raise ValueError(f"no Parquet shards under {stream.data}")
        self.lengths = shard_lengths(self.paths)

    def _mine(self) -> tuple[int, int]:
        """(this reader's index, number of readers) over global batches: rank-major, then worker."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        world = self.stream.world_size
        return self.stream.rank + world * worker, world * workers

    def __iter__(self) -> Iterator[tuple[int, dict[str, torch.Tensor] | None, dict[str, int]]]:
        """``(global batch index, batch, skipped rows by reason)``; batch is None when no row was usable."""
        reader, readers = self._mine()
        rows = ShardRows(self.paths, self.stream.images, self.stream.cached_shards)
        self._named: Counter[str] = Counter()
        size = self.stream.batch_size
        pending: list[Example | None] = []
        skipped: Counter[str] = Counter()
        for position, (_, shard, row) in enumerate(
            row_stream(self.lengths, self.stream.seed, self.stream.shuffle_buffer)
        ):
            batch_index = position // size
            if batch_index < self.start_batch or (batch_index - self.start_batch) % readers != reader:
                continue
            pending.append(self._example(rows, position, shard, row, skipped))
            if len(pending) == size:
                examples = [e for e in pending if e is not None]
                batch = collate(examples, self.processor.tokenizer.pad_token_id) if examples else None
                # Always yield, even an empty batch, so DataLoader's round-robin keeps the global order.
                yield batch_index, batch, dict(skipped)
                pending, skipped = [], Counter()

    def _example(
        self, rows: ShardRows, position: int, shard: int, row: int, skipped: Counter
    ) -> Example | None:
        rng = random.Random(f"{self.stream.seed}:{position}")
        record = rows.get(shard, row)
        try:
            return make_example(record, self.processor, self.text, self.num_slots, rng)
        except SkipRow as err:
            # A batch shrinks by its unusable rows rather than pulling replacements, which would
            # make the stream position depend on what was skipped.
            reason = skip_reason(err)
            skipped[reason] += 1
            self._named[reason] += 1
            if self._named[reason] <= NAMED_SKIPS_PER_REASON:
                LOGGER.warning("skipped %s row %d key %r: %s", self.paths[shard], row, record.get("key"), err)
            return None


def skip_reason(err: SkipRow) -> str:
    """The reason of a skipped row without its details (sizes, decoder messages), for counting."""
    return str(err).split(":")[0].split("(")[0].strip()


def make_loader(dataset: ShardBatches) -> DataLoader:
    """A DataLoader over ready-made batches (batch_size=None), with the configured workers."""
    workers = dataset.stream.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def require_usable_row(config, processor, num_slots: int) -> None:
    """Raise ValueError naming the skip reasons when no row of ``config.data`` makes an example.

    Rows are tried in file order and the scan stops at the first usable one (normally the first).
    ``config`` is the TrainConfig (its data, images and text settings).
    """
    paths = list_shard_files(config.data)
    if not paths:
        raise ValueError(f"no Parquet shards under {config.data}")
    rows = ShardRows(paths, config.images, cached=1)
    text, skipped = config.text_config(config.location_grid), Counter()
    for shard, length in enumerate(shard_lengths(paths)):
        for row in range(length):
            try:
                make_example(rows.get(shard, row), processor, text, num_slots, random.Random(0))
                return
            except SkipRow as err:
                skipped[skip_reason(err)] += 1
    reasons = ", ".join(f"{reason}: {n}" for reason, n in skipped.most_common()) or "the shards hold no rows"
    hint = (
        " (shards without image bytes need --images, the img2dataset folder)"
        if "row has no image bytes" in skipped
        else ""
    )
    raise ValueError(f"no usable training example in {config.data}: {reasons}{hint}")
