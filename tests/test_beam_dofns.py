"""The job's DoFns one at a time on Beam's TestPipeline, checked with assert_that.

Real spaCy parses and real JPEG bytes; the matchers are module-level functions (Beam pickles them).
Each test feeds every way a row can leave the DoFn: the main output, each reject reason, and the
stage timings on the stats output.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline as beam_testing
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from grit_pipeline.beam_jobs.ground import AssembleFn
from grit_pipeline.beam_jobs.records import REJECTS, STATS, Row, StageTime
from grit_pipeline.beam_jobs.stages import ParseCaptions
from grit_pipeline.fetch import FetchedImage
from grit_pipeline.grounding.base import GroundingResult, ScoredBox
from grit_pipeline.inputs import InputRow
from grit_pipeline.locations import Box, box_to_cells, cells_to_box, parse_grounded_caption
from grit_pipeline.testing import jpeg_bytes
from grit_pipeline.text import TextConfig, TextStage

CAPTIONS = {
    "k0": "a dog on the grass",
    "k1": "  two cats  on\na sofa ",  # whitespace stays out of the spans
    "k2": "   ",
    "k3": "running quickly",
    "k4": "the pursuit of happiness",
}


def _row(key: str, caption: str) -> Row:
    return Row(InputRow(key=key, url=f"http://127.0.0.1/{key}.jpg", caption=caption, source="in.parquet"))


def chunk_texts(row: Row) -> tuple[str, tuple[str, ...]]:
    return row.key, tuple(span.text(row.parsed.caption) for span in row.parsed.noun_chunks)


def reject_summary(reject: dict) -> tuple[str, str, str]:
    return reject["key"], reject["stage"], reject["reason"]


def only_stage_times_of(*stages: str):
    """A matcher: every stats element is a StageTime of one of ``stages``, with seconds >= 0, and there is one."""
    return _StageTimes(stages)


class _StageTimes:
    def __init__(self, stages):
        self.stages = set(stages)

    def __call__(self, actual):
        actual = list(actual)
        if not actual or not all(isinstance(t, StageTime) for t in actual):
            raise BeamAssertException(f"expected StageTime records, got {actual}")
        if {t.stage for t in actual} != self.stages or any(t.seconds < 0 for t in actual):
            raise BeamAssertException(f"expected stage times of {sorted(self.stages)}, got {actual}")


def test_parse_captions_splits_rows_and_rejects():
    with beam_testing.TestPipeline() as pipeline:
        rows = pipeline | beam.Create([_row(k, c) for k, c in CAPTIONS.items()])
        parsed = rows | ParseCaptions(TextConfig(batch_size=2))
        assert_that(
            parsed.rows | "Chunks" >> beam.Map(chunk_texts),
            equal_to([("k0", ("a dog", "the grass")), ("k1", ("two cats", "a sofa"))]),
            label="rows",
        )
        assert_that(
            parsed[REJECTS] | "Rejects" >> beam.Map(reject_summary),
            equal_to(
                [
                    ("k2", "parse", "empty_caption"),
                    ("k3", "parse", "no_noun_chunk"),
                    ("k4", "parse", "abstract_nouns_only"),
                ]
            ),
            label="rejects",
        )
        assert_that(parsed[STATS], only_stage_times_of("parse"), label="stats")


DOG = ScoredBox(Box(0.1, 0.2, 0.5, 0.9), 0.8)


@pytest.fixture(scope="module")
def assemble_inputs(nlp):
    """(row with caption, image and parse; detector result) for each way out of AssembleFn."""
    stage = TextStage(nlp=nlp)
    image = jpeg_bytes(64, 48)
    fetched = FetchedImage(image, width=640, height=480, image_width=64, image_height=48, sha256="ab" * 32)
    cases = [
        (
            "grounded",
            "a dog on the grass",
            lambda n: GroundingResult(boxes=((DOG,),) + ((),) * (n - 1)),
        ),
        ("no-box", "a cat on a mat", lambda n: GroundingResult(boxes=((),) * n)),
        ("unrenderable", "a square <b>bold</b>", lambda n: GroundingResult(boxes=((DOG,),) * n)),
    ]
    elements = []
    for key, caption, result in cases:
        parsed = stage.parse([caption])[0]
        base = _row(key, caption)
        row = Row(InputRow(**{**base.input.__dict__, "fields": {"source": f"case-{key}"}}), parsed, fetched)
        elements.append((row, result(len(parsed.noun_chunks))))
    return elements


def record_summary(record: dict) -> tuple:
    _, entities = parse_grounded_caption(record["grounded_caption"])
    return (
        record["key"],
        record["caption"],
        tuple((name, tuple(boxes)) for name, _, boxes in entities),
        len(record["image"]),
        (record["width"], record["height"], record["image_width"], record["image_height"]),
        record["source"],
    )


def test_assemble_fn_records_rejects_and_timings(assemble_inputs):
    image_size = len(assemble_inputs[0][0].fetched.image)
    with beam_testing.TestPipeline() as pipeline:
        outputs = (
            pipeline
            | beam.Create(assemble_inputs)
            | beam.ParDo(AssembleFn(store_images=True)).with_outputs(REJECTS, STATS, main="records")
        )
        decoded = (cells_to_box(*box_to_cells(DOG.box)).as_tuple(),)  # what its location tokens say
        assert_that(
            outputs.records | "Records" >> beam.Map(record_summary),
            equal_to(
                [
                    (
                        "grounded",
                        "a dog on the grass",
                        (("a dog on the grass", decoded),),
                        image_size,
                        (640, 480, 64, 48),
                        "case-grounded",
                    )
                ]
            ),
            label="records",
        )
        assert_that(
            outputs[REJECTS] | "Rejects" >> beam.Map(reject_summary),
            equal_to(
                [
                    ("no-box", "ground", "no_box_above_threshold"),
                    ("unrenderable", "assemble", "unrenderable_caption"),
                ]
            ),
            label="rejects",
        )
        assert_that(outputs[STATS], only_stage_times_of("assemble"), label="stats")
