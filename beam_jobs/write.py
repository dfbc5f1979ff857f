"""The write stage: shard and rejects Parquet files of the run, then the sealed list of them.

Writers buffer rows per bundle and write a file every ``rows_per_shard`` rows and at the end of
the bundle, each once under a fresh name of the run (``RunPlan.new_file``); the names travel on
as elements, so only files of bundles Beam committed are listed. The job's last steps seal that
list with the files read and the stage timings, in ``SEAL_PARTS`` part files (grouped by a hash, so
no single element holds the whole list; timings summed per stage), then ``sealed.json`` naming the
parts; the launcher commits it (see ``commit``).

Counters (Beam metrics, namespace ``grit``): ``accepted`` and ``rejected/STAGE/REASON``, which
the launcher reads while it waits for a job on any runner.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from grit_pipeline.beam_jobs.commit import SEAL_PARTS, seal, seal_part
from grit_pipeline.beam_jobs.output_dir import RunPlan
from grit_pipeline.beam_jobs.progress import METRICS_NAMESPACE, records_folder, tracker
from grit_pipeline.beam_jobs.records import STATS, StagedFile
from grit_pipeline.beam_jobs.stages import TimedDoFn, windowed
from grit_pipeline.schemas import REJECTS_SCHEMA, shard_schema, write_table

REJECTS_PER_FILE = 100_000  # rejects rows are small; one file per bundle is the common case


class WriteFn(TimedDoFn):
    """Rows -> Parquet files of the run (as ``StagedFile`` elements)."""

    stage = "write"

    def __init__(
        self, plan: RunPlan, kind: str, rows_per_file: int, extra_fields=(), progress_s: float = 10.0
    ):
        self._plan, self._kind, self._rows_per_file = plan, kind, rows_per_file
        self._extra_fields, self._progress_s = list(extra_fields), progress_s

    def setup(self):
        self._schema: pa.Schema = (
            REJECTS_SCHEMA if self._kind == "rejects" else shard_schema(self._extra_fields)
        )
        self._provenance = {**self._plan.provenance, "run_id": self._plan.run_id}
        self._progress = tracker(self._progress_s, records_folder(self._plan.staging))
        self._accepted = Metrics.counter(METRICS_NAMESPACE, "accepted")

    def start_bundle(self):
        super().start_bundle()
        self._rows: list[dict] = []

    def process(self, record: dict):
        self._rows.append(record)
        if self._kind == "rejects":
            self._progress.reject(f"{record['stage']}/{record['reason']}")
            Metrics.counter(METRICS_NAMESPACE, f"rejected/{record['stage']}/{record['reason']}").inc()
        else:
            self._progress.accept()
            self._accepted.inc()
        if len(self._rows) >= self._rows_per_file:
            yield self._flush()

    def finish_bundle(self):
        if self._rows:
            yield windowed(self._flush())
        yield self.stage_time()

    def _flush(self) -> StagedFile:
        start = time.perf_counter()
        path = self._plan.new_file(self._kind)
        rows = write_table(self._rows, path, self._schema, self._provenance, atomic=False)
        by_reason = Counter(r["reason"] for r in self._rows) if self._kind == "rejects" else {}
        self._rows = []
        self.busy_s += time.perf_counter() - start
        return StagedFile(self._kind, path, rows, dict(by_reason))


def _seal_part(item) -> int:
    """A fixed part of the sealed list for each item (the same on a retry), spread by a hash."""
    return zlib.crc32(repr(item).encode()) % SEAL_PARTS


class SealPartFn(beam.DoFn):
    """(part, items) -> ``sealed-PART.json`` in the run's staging folder; yields its name."""

    def __init__(self, plan: RunPlan):
        self._plan = plan

    def process(self, element):
        part, items = element
        yield seal_part(self._plan, part, items)


class SealFn(beam.DoFn):
    """The names of the sealed list's parts (at most ``SEAL_PARTS``) -> ``sealed.json``: the job is done."""

    def __init__(self, plan: RunPlan):
        self._plan = plan

    def process(self, parts: list):
        seal(self._plan, parts)
        yield len(parts)


class WriteOutputs(beam.PTransform):
    """(shard records, rejects rows, stats) -> the run's Parquet files and their sealed list."""

    def __init__(self, plan: RunPlan, rows_per_shard: int, extra_fields=(), progress_s: float = 10.0):
        super().__init__()
        self._plan, self._rows_per_shard = plan, rows_per_shard
        self._extra_fields, self._progress_s = list(extra_fields), progress_s

    def expand(self, inputs):
        records, rejects, stats = inputs
        shard_writer = WriteFn(
            self._plan, "shards", self._rows_per_shard, self._extra_fields, self._progress_s
        )
        reject_writer = WriteFn(self._plan, "rejects", REJECTS_PER_FILE, (), self._progress_s)
        shards = records | "WriteShards" >> beam.ParDo(shard_writer).with_outputs(STATS, main="files")
        rejected = rejects | "WriteRejects" >> beam.ParDo(reject_writer).with_outputs(STATS, main="files")
        return (
            (shards.files, shards[STATS], rejected.files, rejected[STATS], stats)
            | "Everything" >> beam.Flatten()
            | "ToPart" >> beam.Map(lambda item: (_seal_part(item), item))
            | "ByPart" >> beam.GroupByKey()
            | "SealParts" >> beam.ParDo(SealPartFn(self._plan))
            | "PartNames" >> beam.combiners.ToList()
            | "Seal" >> beam.ParDo(SealFn(self._plan))
        )
