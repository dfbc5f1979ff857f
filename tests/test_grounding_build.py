"""The grounding stage inside `grit build` and as a Beam DoFn on the local runner.

Batch invariance: the same mixed-size input (24 images, 12 processed shapes) built at
--detector-batch-size 1, 8 and 16, in-process and in multi_processing mode, gives the same
noun_chunks/ref_exps (boxes and scores within 1e-4), and each manifest's batch figures count what
ran. Failure
isolation: an image that makes the detector raise is one rejects row with the error text, and the
other rows of its batch are grounded as usual. Real images over a loopback server, the real tiny
detector (saved and loaded through from_pretrained), Beam's real runner.
"""

from __future__ import annotations

import io

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.ground import GroundAndAssemble
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.beam_jobs.records import REJECTS, Row
from grit_pipeline.fetch import FetchedImage
from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig
from grit_pipeline.grounding.preprocess import ImageSpec
from grit_pipeline.inputs import InputRow
from grit_pipeline.schemas import list_shard_files, read_shard
from grit_pipeline.testing import LoopbackServer, Route
from grit_pipeline.text import TextConfig, TextStage

# Twelve processed shapes for the tiny detector's processor (shortest edge 96, longest 160), one
# of them seven images' (4:3 and near it): batches of 8 and 16 hold several images, of one shape.
SIZES = [
    (200, 150), (300, 150), (150, 200), (160, 120), (210, 150), (400, 140), (150, 150), (230, 160),
    (320, 240), (240, 320), (180, 120), (120, 180), (256, 144), (144, 256), (333, 250), (270, 210),
    (190, 190), (260, 150), (222, 111), (111, 222), (300, 200), (201, 149), (161, 120), (170, 130),
]  # fmt: skip
CAPTIONS = [
    "a dog on the grass near a red car",
    "two people riding bikes on a street",
    "a cup of coffee on a wooden table",
    "a man holding an umbrella in the rain",
]
COMMON = ["--detector", TINY_DETECTOR, "--allow-network", "127.0.0.1/32", "--progress-interval", "0"]
COMMON += ["--box-threshold", "0.5"]  # the tiny detector's scores sit near 0.5: many boxes, many near-ties


def noise_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def input_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("invariance")
    with LoopbackServer() as server:
        urls = [server.add(f"/{i}.jpg", Route(noise_jpeg(i, size))) for i, size in enumerate(SIZES)]
        captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(len(urls))]
        pq.write_table(pa.table({"url": urls, "caption": captions}), root / "input.parquet")
        yield root, server


def spans_by_key(output) -> dict[str, tuple]:
    rows = [r for path in list_shard_files(str(output / "shards")) for r in read_shard(path).to_pylist()]
    return {r["key"]: (r["noun_chunks"], r["ref_exps"]) for r in rows}


def assert_same_spans(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        for got_rows, want_rows in zip(got[key], want[key]):
            assert len(got_rows) == len(want_rows), key
            for got_row, want_row in zip(got_rows, want_rows):
                assert got_row[:2] == want_row[:2], key  # the same character span
                assert np.allclose(got_row[2:], want_row[2:], atol=1e-4), key


BUILDS = {
    "in_process_1": ["--detector-batch-size", "1"],
    "in_process_8": ["--detector-batch-size", "8"],
    "in_process_16": ["--detector-batch-size", "16"],
    "multi_processing_8": ["--detector-batch-size", "8", "--direct_running_mode", "multi_processing"],
    "multi_processing_16": ["--detector-batch-size", "16", "--direct_running_mode", "multi_processing"],
}


def assert_inspect_prints(out, figures, capsys) -> None:
    from grit_pipeline.cli import main

    capsys.readouterr()
    assert main(["inspect", str(out / "shards")]) == 0
    text = capsys.readouterr().out
    batch_size = figures["configured_batch_size"]
    expected = (
        f"{len(SIZES)} images in {figures['batches']} batches, mean {figures['mean_batch']} of {batch_size}"
    )
    assert expected in text and f"{figures['distinct_shapes']} shapes" in text


@pytest.mark.slow
def test_the_same_build_at_batch_sizes_1_8_and_16_in_process_and_multi_processing(input_table, capsys):
    root, _ = input_table
    shapes = {ImageSpec(96, 160).target_shape(*size) for size in SIZES}  # the tiny processor's sizes
    outputs = {}
    for name, extra in BUILDS.items():
        out = root / name
        argv = ["--input", str(root / "input.parquet"), "--output", str(out), *COMMON, *extra]
        if "multi_processing" in name:
            argv += ["--direct_num_workers", "2"]
        assert run(argv) == 0
        manifest = load_manifest(str(out))
        counts = manifest["counts"]
        assert counts["input"] == counts["accepted"] + counts["rejected"] == len(SIZES)
        figures = manifest["timings"]["ground_batches"]
        batch_size = int(extra[1])
        assert figures["images_grounded"] == len(SIZES) and figures["configured_batch_size"] == batch_size
        assert figures["distinct_shapes"] == len(shapes)
        # At least one batch per shape, none over the configured size; batch size 1: one per image.
        assert len(shapes) <= figures["batches"] and figures["mean_batch"] <= batch_size
        assert figures["mean_batch"] == pytest.approx(len(SIZES) / figures["batches"], abs=1e-3)
        assert figures["batch_fill"] == pytest.approx(figures["mean_batch"] / batch_size, abs=1e-3)
        if batch_size == 1:
            assert figures["batches"] == len(SIZES)
        if name == "multi_processing_16":  # figures merged over both workers, printed by grit inspect
            assert_inspect_prints(out, figures, capsys)
        outputs[name] = spans_by_key(out)
    want = outputs["in_process_1"]
    assert sum(len(chunks) for chunks, _ in want.values()) > 0
    for got in outputs.values():
        assert_same_spans(got, want)


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def make_row(key: str, caption: str, data: bytes, size: tuple[int, int], text: TextStage) -> Row:
    [parsed] = text.parse([caption])
    fetched = FetchedImage(data, *size, *size, sha256=key, source=data)
    return Row(InputRow(key, f"http://127.0.0.1/{key}", caption, "test"), parsed=parsed, fetched=fetched)


def reject_summary(reject: dict) -> tuple:
    """(key, stage, reason, whether the error names the bad size): a module-level, picklable matcher."""
    return reject["key"], reject["stage"], reject["reason"], "4000x1" in (reject["error"] or "")


def test_an_image_that_makes_the_detector_raise_is_one_reject_with_the_error(nlp):
    text = TextStage(TextConfig())
    good = [make_row(f"good-{i}", CAPTIONS[i], noise_jpeg(i, SIZES[i]), SIZES[i], text) for i in range(3)]
    # A 4000x1 PNG: the detector's processed height is 0 pixels, so grounding it raises.
    bad = make_row("bad", CAPTIONS[0], png_bytes((4000, 1)), (4000, 1), text)
    config = DetectorConfig(model=TINY_DETECTOR, box_threshold=0.0, batch_size=8, max_stretch=0.0)
    with test_pipeline.TestPipeline() as pipeline:
        out = (
            pipeline | beam.Create([good[0], bad, *good[1:]]) | GroundAndAssemble(config, store_images=False)
        )
        keys = out["records"] | "Keys" >> beam.Map(lambda record: record["key"])
        assert_that(keys, equal_to(["good-0", "good-1", "good-2"]), label="AcceptedRows")
        rejects = out[REJECTS] | "Summary" >> beam.Map(reject_summary)
        assert_that(rejects, equal_to([("bad", "ground", "grounding_error", True)]), label="Rejects")
