"""Grounding in same-shape batches, then assembly of the GRIT columns.

``GroundFn`` holds one detector per worker process (Beam's ``Shared`` handle: bundles that run in
threads of one process share it) and, per bundle, a thread pool that prepares each row's image
(decoded from the downloaded bytes at reduced scale, resized to its size bucket) while the detector
runs, so the forward does not wait on PIL. Prepared rows wait in ``ShapeBuckets``: a batch holds one
processed shape, so no image is padded and a row's boxes do not depend on which rows share its
batch or bundle. A batch leaves when full (``--detector-batch-size``), when the bundle ends, when a
bucket's oldest row has waited ``--max-batch-wait`` seconds (checked as rows arrive), or early when
more than ``HELD_BATCHES`` batches' worth of rows are held (the oldest row's bucket goes; memory
stays bounded). Each bundle reports its images, batches and shapes (``BatchStats``): the
manifest's batch figures.

Why not RunInference: its ``BatchElements`` mixes shapes in a batch, and keyed batching through
``GroupIntoBatches`` would shuffle image-carrying rows (Beam's local runner holds a shuffle's
whole input in memory). Failures stay rows: an image that cannot be prepared, or that makes the
detector raise (a failing batch is retried row by row), is rejected with ``grounding_error`` and
the exception's text; the other rows go on.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import apache_beam as beam
from apache_beam.utils import shared

from grit_pipeline.assemble import assemble_spans
from grit_pipeline.beam_jobs import progress
from grit_pipeline.beam_jobs.records import REJECTS, STATS, BatchStats, Row
from grit_pipeline.beam_jobs.stages import TimedDoFn, windowed
from grit_pipeline.grounding import DetectorConfig, GroundingRequest, load_detector
from grit_pipeline.grounding.batching import BatchTally, GroundingError, ShapeBuckets, ground_isolated
from grit_pipeline.grounding.config import GROUNDING_ERROR
from grit_pipeline.grounding.devices import (
    choose_device,
    sdk_processes_here,
    threads_per_process,
    usable_cores,
)
from grit_pipeline.schemas.rejects import UNEXPECTED_ERROR, error_text

_INSTANCES = itertools.count()  # GroundFn instances of this process: each takes the next GPU

# Rows held waiting for their batch, in batches: 16 keeps the mean batch at 99 % of 8 (and of 16)
# on benchmarks/batch_fill.py's stream, where 4 gave 59 % (8 gives 89 %). A held row is its
# prepared pixels (at most 1333 x 800 x 3 bytes, 3.2 MB) plus its stored image: at most about
# 0.4 GB per worker at batch size 8, 1.6 GB at 32.
HELD_BATCHES = 16


def shape_of(image) -> tuple[int, int]:
    """A prepared image's (height, width), or a PIL image's size: the batching key."""
    return image.shape if hasattr(image, "shape") else image.size


class GroundFn(TimedDoFn):
    """Rows with an image and noun chunks -> (row, detector result); failures to rejects."""

    stage = "ground"

    def __init__(self, config: DetectorConfig, max_batch_wait_s: float | None = None):
        self._config, self._max_batch_wait_s = config, max_batch_wait_s
        self._shared = shared.Shared()

    def setup(self):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        device = choose_device(self._config.device, gpus, os.getpid() + next(_INSTANCES))
        config = replace(self._config, device=device)  # one shared detector per device of this process
        threads = self._threads()
        self._detector = self._shared.acquire(lambda: self._load(config), tag=repr(config))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grit-prepare")
        self._max_pending = self._config.batch_size + 2 * threads

    def _threads(self) -> int:
        """torch's threads: --detector-threads, else this process's share of its machine's usable cores."""
        import torch

        threads = self._config.threads or threads_per_process(usable_cores(), sdk_processes_here())
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def _load(self, config: DetectorConfig):
        detector = load_detector(config)
        progress.detector_loaded()  # the progress records count the copies per process
        return detector

    def teardown(self):
        self._pool.shutdown(wait=True, cancel_futures=True)

    def start_bundle(self):
        super().start_bundle()
        if not self._config.threads:  # SDK processes of this machine may have started since setup
            self._threads()
        batch_size = self._config.batch_size
        self._pending: deque[Future] = deque()
        self._tally = BatchTally()  # images through the detector in this bundle, its batches, shapes
        self._buckets = ShapeBuckets(
            batch_size, max_held=HELD_BATCHES * batch_size, max_wait_s=self._max_batch_wait_s
        )

    def process(self, row: Row):
        start = time.perf_counter()
        self._pending.append(self._pool.submit(self._prepare, row))
        out = list(self._collect(wait_for=len(self._pending) - self._max_pending))
        self.busy_s += time.perf_counter() - start
        yield from out

    def finish_bundle(self):
        start = time.perf_counter()
        out = list(self._collect(wait_for=len(self._pending)))
        for batch in self._buckets.flush():
            out += self._ground(batch)
        self.busy_s += time.perf_counter() - start
        for element in out:
            if isinstance(element, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(element.tag, windowed(element.value))
            else:
                yield windowed(element)
        yield self.stage_time(self._tally.images)
        tally = self._tally
        shapes = tuple(sorted(tally.shapes))
        batch_stats = BatchStats(tally.images, tally.batches, shapes, self._config.batch_size)
        yield beam.pvalue.TaggedOutput(STATS, windowed(batch_stats))

    def _prepare(self, row: Row) -> tuple[Row, GroundingRequest | GroundingError]:
        """Runs in the pool: the row's image decoded and resized for the detector."""
        fetched = row.fetched
        data = fetched.source if self._config.image_source == "source" and fetched.source else fetched.image
        try:
            image = self._detector.image_from_bytes(data)
        except Exception as err:  # e.g. a side that resizes to 0 pixels: this row only
            return row, GroundingError.of(err)
        return row, GroundingRequest(image, row.parsed.caption, row.parsed.noun_chunks)

    def _collect(self, wait_for: int):
        """Prepared rows into their buckets (waiting for the first ``wait_for``); ready batches grounded."""
        while self._pending and (wait_for > 0 or self._pending[0].done()):
            row, request = self._pending.popleft().result()
            wait_for -= 1
            if isinstance(request, GroundingError):
                yield beam.pvalue.TaggedOutput(REJECTS, row.reject("ground", GROUNDING_ERROR, request.error))
                continue
            try:
                batches = self._buckets.add(shape_of(request.image), (row, request))
            except Exception as err:  # this row only
                yield beam.pvalue.TaggedOutput(
                    REJECTS, row.reject("ground", GROUNDING_ERROR, error_text(err))
                )
                continue
            for batch in batches:
                yield from self._ground(batch)

    def _ground(self, batch: list[tuple[Row, GroundingRequest]]):
        results = ground_isolated(self._detector, [request for _, request in batch])
        self._tally.record(len(batch), shape_of(batch[0][1].image))
        for (row, _), result in zip(batch, results):
            if isinstance(result, GroundingError):
                yield beam.pvalue.TaggedOutput(REJECTS, row.reject("ground", GROUNDING_ERROR, result.error))
            else:
                yield row, result


def shard_row(row: Row, assembled, store_images: bool) -> dict:
    """The shard record of an accepted row (schema v1 plus pass-through columns)."""
    fetched = row.fetched
    return {
        "key": row.key,
        "url": row.input.url,
        "caption": row.parsed.caption,
        "width": fetched.width,
        "height": fetched.height,
        "noun_chunks": assembled.noun_chunks,
        "ref_exps": assembled.ref_exps,
        "grounded_caption": assembled.grounded_caption,
        "image": fetched.image if store_images else None,
        "image_width": fetched.image_width,
        "image_height": fetched.image_height,
        "sha256": fetched.sha256,
        **row.input.fields,
    }


class AssembleFn(TimedDoFn):
    """(row, detector result) -> a shard record, or a reject (no box, caption not renderable)."""

    stage = "assemble"

    def __init__(self, store_images: bool):
        self._store_images = store_images

    def process(self, element):
        row, result = element
        if result.reject_reason:
            yield beam.pvalue.TaggedOutput(REJECTS, row.reject("ground", result.reject_reason))
            return
        start = time.perf_counter()
        try:
            record = shard_row(row, assemble_spans(row.parsed, result), self._store_images)
        except ValueError as err:  # e.g. a caption holding '<' or '>', which Kosmos-2's format cannot carry
            yield beam.pvalue.TaggedOutput(REJECTS, row.reject("assemble", "unrenderable_caption", str(err)))
            return
        except Exception as err:  # anything else ends this row only
            yield beam.pvalue.TaggedOutput(REJECTS, row.reject("assemble", UNEXPECTED_ERROR, error_text(err)))
            return
        finally:
            self.busy_s += time.perf_counter() - start
        yield record


class GroundAndAssemble(beam.PTransform):
    """Rows -> shard records (``records``), rejects and stage times (``stats``)."""

    def __init__(
        self,
        config: DetectorConfig,
        store_images: bool,
        max_batch_wait_s: float | None = None,
        accelerator: str | None = None,
    ):
        super().__init__()
        self._config, self._store_images = config, store_images
        self._max_batch_wait_s, self._accelerator = max_batch_wait_s, accelerator

    def expand(self, rows):
        ground = beam.ParDo(GroundFn(self._config, self._max_batch_wait_s))
        if self._accelerator:  # only this step asks for GPU machines (Dataflow's right fitting)
            ground = ground.with_resource_hints(accelerator=self._accelerator)
        grounded = rows | "Ground" >> ground.with_outputs(REJECTS, STATS, main="grounded")
        assembled = grounded["grounded"] | "Assemble" >> beam.ParDo(
            AssembleFn(self._store_images)
        ).with_outputs(REJECTS, STATS, main="records")
        return {
            "records": assembled["records"],
            REJECTS: (grounded[REJECTS], assembled[REJECTS]) | "GroundRejects" >> beam.Flatten(),
            STATS: (grounded[STATS], assembled[STATS]) | "GroundStats" >> beam.Flatten(),
        }
