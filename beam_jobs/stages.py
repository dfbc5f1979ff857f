"""The job's stages before grounding as Beam transforms: read (with unique keys), parse, fetch.

Each DoFn adapts a plain function of grit_pipeline (``inputs.read_file``, ``TextStage.parse``,
``fetch.Fetcher``); heavy state loads in ``setup()``. Every row leaves either on the main output or
on the ``rejects`` output as a rejects row, and every DoFn reports its busy seconds on ``stats``.
An exception no stage expected ends its row only, as an ``unexpected_error`` reject with the
exception's class and message: no row can fail a bundle (which runners retry, then fail the job).
"""

from __future__ import annotations

import time
from dataclasses import replace

import apache_beam as beam
import fsspec
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from grit_pipeline.beam_jobs.dedup import UniqueKeys
from grit_pipeline.beam_jobs.progress import tracker
from grit_pipeline.beam_jobs.records import REJECTS, STATS, FileRead, Row, StageTime, rejected
from grit_pipeline.fetch import FetchConfig, FetchedImage, Fetcher, FetchFailure
from grit_pipeline.inputs import InputConfig, InputRow, key_prefixes, read_file, read_retry_rows
from grit_pipeline.inputs.files import stem
from grit_pipeline.schemas.rejects import UNEXPECTED_ERROR, error_text
from grit_pipeline.text import TextConfig, TextStage


def windowed(value) -> WindowedValue:
    """An element emitted from ``finish_bundle`` (batch pipelines: the global window)."""
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


class TimedDoFn(beam.DoFn):
    """Accumulates the stage's own busy seconds and reports them at the end of each bundle."""

    stage = "stage"

    def start_bundle(self):
        self.busy_s = 0.0

    def stage_time(self, rows: int = 0):
        """This bundle's busy seconds (and, where the stage counts them, its rows) as a stats record."""
        return beam.pvalue.TaggedOutput(STATS, windowed(StageTime(self.stage, self.busy_s, rows)))

    def finish_bundle(self):
        yield self.stage_time()


class ReadFileFn(TimedDoFn):
    """An input file path -> its rows; unusable rows to rejects; a FileRead record when done."""

    stage = "read"

    def __init__(
        self,
        config: InputConfig,
        retry_reasons: tuple[str, ...] = (),
        progress_s: float = 10.0,
        key_prefixes: dict[str, str] | None = None,
        records: str | None = None,
    ):
        self._config, self._retry_reasons, self._progress_s = config, frozenset(retry_reasons), progress_s
        self._key_prefixes, self._records = key_prefixes or {}, records

    def process(self, path: str):
        progress, count = tracker(self._progress_s, self._records), 0
        prefix = self._key_prefixes.get(path)
        rows = (
            read_retry_rows(path, self._retry_reasons)
            if self._retry_reasons
            else read_file(path, self._config, prefix)
        )
        start = time.perf_counter()
        try:
            for row in rows:
                self.busy_s += time.perf_counter() - start
                count += 1
                progress.read()
                if row.reject is not None:
                    yield beam.pvalue.TaggedOutput(REJECTS, rejected(row, "read", *row.reject))
                else:
                    yield Row(row)
                start = time.perf_counter()
        except Exception as err:  # the reader broke off unexpectedly: one reject stands for the rest
            count += 1
            progress.read()
            lost = InputRow(f"{prefix or stem(path)}-unreadable", None, None, path, index=count - 1)
            error = f"{path}: reading stopped after {count - 1} row(s): {error_text(err)}"
            yield beam.pvalue.TaggedOutput(REJECTS, rejected(lost, "read", UNEXPECTED_ERROR, error))
        fs, fs_path = fsspec.core.url_to_fs(path)
        yield beam.pvalue.TaggedOutput(STATS, FileRead(path, count, fs.size(fs_path)))


class ReadInputs(beam.PTransform):
    """Input files -> rows with unique keys (main), rejects, stats. Files are spread over workers first.

    ``records``: the run's progress records folder (``progress.records_folder``), if any.
    Keys are unique in every build: of rows sharing one, the first (by file, then row) stays and the
    others are rejected as ``duplicate_key``; a key in ``earlier_shards`` (committed runs) is taken.
    """

    def __init__(
        self,
        files: list[str],
        config: InputConfig,
        retry_reasons=(),
        progress_s: float = 10.0,
        earlier_shards: tuple[str, ...] = (),
        records: str | None = None,
    ):
        super().__init__()
        self._files, self._earlier_shards = files, tuple(earlier_shards)
        self._fn = ReadFileFn(config, retry_reasons, progress_s, key_prefixes(files), records)

    def expand(self, pipeline):
        read = (
            pipeline
            | "Files" >> beam.Create(self._files)
            | "Spread" >> beam.Reshuffle()
            | "Rows" >> beam.ParDo(self._fn).with_outputs(REJECTS, STATS, main="rows")
        )
        unique = read.rows | "UniqueKeys" >> UniqueKeys(self._earlier_shards)
        rejects = (read[REJECTS], unique[REJECTS]) | "ReadRejects" >> beam.Flatten()
        return {"rows": unique.rows, REJECTS: rejects, STATS: read[STATS]}


class ParseFn(TimedDoFn):
    """A batch of rows -> rows with their parsed caption; unusable captions to rejects."""

    stage = "parse"

    def __init__(self, config: TextConfig):
        self._config = config

    def setup(self):
        self._text = TextStage(self._config)  # spaCy loads once per worker

    def process(self, batch: list[Row]):
        start = time.perf_counter()
        parsed = self._parse([row.input.caption for row in batch])
        self.busy_s += time.perf_counter() - start
        for row, result in zip(batch, parsed):
            if isinstance(result, Exception):
                yield beam.pvalue.TaggedOutput(
                    REJECTS, row.reject("parse", UNEXPECTED_ERROR, error_text(result))
                )
            elif result.reject_reason:
                yield beam.pvalue.TaggedOutput(REJECTS, row.reject("parse", result.reject_reason))
            else:
                yield replace(row, parsed=result)

    def _parse(self, captions: list[str]) -> list:
        """The batch's parses; when the batch raises, each caption alone, the failing ones as their exception."""
        try:
            return self._text.parse(captions)
        except Exception:
            results = []
            for caption in captions:
                try:
                    results += self._text.parse([caption])
                except Exception as err:  # this caption only
                    results.append(err)
            return results


class ParseCaptions(beam.PTransform):
    def __init__(self, config: TextConfig):
        super().__init__()
        self._config = config

    def expand(self, rows):
        return (
            rows
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._config.batch_size)
            | "Parse" >> beam.ParDo(ParseFn(self._config)).with_outputs(REJECTS, STATS, main="rows")
        )


class FetchFn(TimedDoFn):
    """Rows -> rows with their image downloaded, checked and resized; failures to rejects.

    Downloads (a thread pool) and decoding (a thread per core) run while the bundle goes on; what
    is still in flight at the end of the bundle is waited for in ``finish_bundle``.
    """

    stage = "fetch"

    def __init__(self, config: FetchConfig):
        self._config = config

    def setup(self):
        self._fetcher = Fetcher(self._config)

    def teardown(self):
        self._fetcher.close()

    def process(self, row: Row):
        start = time.perf_counter()
        try:
            if row.input.image is not None:  # img2dataset input: bytes in hand, decode only
                done = self._fetcher.submit_bytes(row, row.input.image, row.input.original_size)
            elif row.input.image_file is not None:  # --image-path-column: read here, capped, in the pool
                done = self._fetcher.submit_file(row, row.input.image_file)
            else:
                done = self._fetcher.submit(row, row.input.url)
        except Exception as err:  # this row only (the pool's own failures come back as results)
            done = [(row, FetchFailure(UNEXPECTED_ERROR, error_text(err)))]
        self.busy_s += time.perf_counter() - start
        yield from self._emit(done)

    def finish_bundle(self):
        start = time.perf_counter()
        done = self._fetcher.drain()
        self.busy_s += time.perf_counter() - start
        for element in self._emit(done):
            if isinstance(element, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(element.tag, windowed(element.value))
            else:
                yield windowed(element)
        yield self.stage_time()

    @staticmethod
    def _emit(done):
        for row, result in done:
            if isinstance(result, FetchedImage):
                if row.input.sha256:  # img2dataset hashed the original download; keep that hash
                    result = replace(result, sha256=row.input.sha256)
                yield replace(row, fetched=result)
            else:
                yield beam.pvalue.TaggedOutput(REJECTS, row.reject("fetch", result.reason, result.error))


class FetchImages(beam.PTransform):
    def __init__(self, config: FetchConfig):
        super().__init__()
        self._config = config

    def expand(self, rows):
        return rows | "Fetch" >> beam.ParDo(FetchFn(self._config)).with_outputs(REJECTS, STATS, main="rows")
