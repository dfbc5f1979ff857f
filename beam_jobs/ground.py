"""Grounding through Beam's RunInference, then assembly of the GRIT columns.

``GroundingModelHandler`` is our own small ModelHandler (Beam's Hugging Face handler imports
TensorFlow): RunInference loads one detector per worker process (through Beam's shared handle)
and hands it batches from BatchElements, bounded in size by the detector's batch size and flushed
when the bundle ends, or, with ``--max-batch-wait S``, also after S seconds (stateful batching).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference
from PIL import Image

from grit_pipeline.assemble import assemble_spans
from grit_pipeline.beam_jobs.records import REJECTS, STATS, Row, StageTime
from grit_pipeline.beam_jobs.stages import TimedDoFn, windowed
from grit_pipeline.grounding import Detector, DetectorConfig, GroundingRequest, GroundingResult, load_detector


class GroundingModelHandler(ModelHandler[Row, tuple[Row, GroundingResult, float], Detector]):
    """Rows with an image and noun chunks -> (row, detector result, seconds per row)."""

    def __init__(self, config: DetectorConfig, max_batch_wait_s: float | None = None):
        super().__init__()
        self._config, self._max_batch_wait_s = config, max_batch_wait_s

    def load_model(self) -> Detector:
        return load_detector(self._config)

    def run_inference(
        self, batch: Sequence[Row], model: Detector, inference_args: dict[str, Any] | None = None
    ) -> Iterable[tuple[Row, GroundingResult, float]]:
        start = time.perf_counter()
        requests = [
            GroundingRequest(
                Image.open(io.BytesIO(row.fetched.image)).convert("RGB"),
                row.parsed.caption,
                row.parsed.noun_chunks,
            )
            for row in batch
        ]
        results = model.ground(requests)
        per_row_s = (time.perf_counter() - start) / max(len(batch), 1)
        return [(row, result, per_row_s) for row, result in zip(batch, results)]

    def get_num_bytes(self, batch: Sequence[Row]) -> int:
        return sum(len(row.fetched.image) for row in batch)  # the default pickles the whole batch

    def batch_elements_kwargs(self) -> dict[str, Any]:
        kwargs = {"min_batch_size": 1, "max_batch_size": self._config.batch_size}
        if self._max_batch_wait_s is not None:  # BatchElements then batches statefully, with a timer
            kwargs["max_batch_duration_secs"] = self._max_batch_wait_s
        return kwargs

    def get_metrics_namespace(self) -> str:
        return "grit_ground"

    def share_model_across_processes(self) -> bool:
        return False  # one model per worker process, not one per machine


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

    def start_bundle(self):
        super().start_bundle()
        self.ground_s, self.grounded = 0.0, 0

    def process(self, element):
        row, result, ground_s = element
        self.ground_s, self.grounded = self.ground_s + ground_s, self.grounded + 1
        if result.reject_reason:
            yield beam.pvalue.TaggedOutput(REJECTS, row.reject("ground", result.reject_reason))
            return
        start = time.perf_counter()
        try:
            record = shard_row(row, assemble_spans(row.parsed, result), self._store_images)
        except ValueError as err:  # e.g. a caption holding '<' or '>', which Kosmos-2's format cannot carry
            yield beam.pvalue.TaggedOutput(REJECTS, row.reject("assemble", "unrenderable_caption", str(err)))
            return
        finally:
            self.busy_s += time.perf_counter() - start
        yield record

    def finish_bundle(self):
        yield self.stage_time()
        yield beam.pvalue.TaggedOutput(STATS, windowed(StageTime("ground", self.ground_s, self.grounded)))


class GroundAndAssemble(beam.PTransform):
    """Rows -> shard records (main) and rejects."""

    def __init__(self, config: DetectorConfig, store_images: bool, max_batch_wait_s: float | None = None):
        super().__init__()
        self._config, self._store_images = config, store_images
        self._max_batch_wait_s = max_batch_wait_s

    def expand(self, rows):
        return (
            rows
            | "Ground" >> RunInference(GroundingModelHandler(self._config, self._max_batch_wait_s))
            | "Assemble"
            >> beam.ParDo(AssembleFn(self._store_images)).with_outputs(REJECTS, STATS, main="records")
        )
