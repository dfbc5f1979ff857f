"""The grounding stage's worker set-up: which image the detector sees, and its torch thread pool."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
import torch
from PIL import Image

from grit_pipeline.beam_jobs.ground import GroundFn
from grit_pipeline.beam_jobs.options import add_arguments, worker_threads
from grit_pipeline.beam_jobs.records import Row
from grit_pipeline.fetch import FetchedImage
from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig
from grit_pipeline.grounding.devices import usable_cores
from grit_pipeline.grounding.preprocess import prepare_bytes
from grit_pipeline.inputs import InputRow
from grit_pipeline.text import ParsedCaption


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture()
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def ground_fn(**config) -> GroundFn:
    fn = GroundFn(DetectorConfig(model=TINY_DETECTOR, box_threshold=0.3, **config))
    fn.setup()
    return fn


@pytest.mark.parametrize("image_source", ["source", "stored"])
def test_the_detector_sees_the_downloaded_image_unless_asked_for_the_stored_copy(image_source, torch_threads):
    rng = np.random.default_rng(0)
    source = jpeg(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))  # as downloaded
    stored = jpeg(np.full((75, 100, 3), 128, dtype=np.uint8))  # the fetch stage's resized copy
    fetched = FetchedImage(stored, 400, 300, 100, 75, sha256="x", source=source)
    row = Row(InputRow("k", "http://127.0.0.1/k", "a dog", "test"), ParsedCaption("a dog"), fetched)
    fn = ground_fn(image_source=image_source, threads=1)
    try:
        _, request = fn._prepare(row)
        spec = fn._detector.image_spec
        want = prepare_bytes(source if image_source == "source" else stored, spec)
        assert np.array_equal(request.image.pixels, want.pixels)
    finally:
        fn.teardown()


def test_each_worker_sizes_its_torch_pool_from_the_config(torch_threads):
    torch.set_num_threads(2)
    fn = ground_fn(threads=1)
    try:
        assert torch.get_num_threads() == 1
    finally:
        fn.teardown()


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_thread_pools_share_the_cores_between_local_workers():
    cores = usable_cores()
    multi = ["--direct_running_mode", "multi_processing", "--direct_num_workers"]
    assert worker_threads(parse([])) == cores  # in-process: one worker
    assert worker_threads(parse([*multi, "2"])) == max(1, cores // 2)
    assert worker_threads(parse([*multi, str(4 * cores)])) == 1
    assert (
        worker_threads(parse(["--direct_running_mode", "multi_threading", "--direct_num_workers", "4"]))
        == cores
    )
    assert worker_threads(parse(["--runner", "apache_beam.runners.direct.DirectRunner", *multi, "2"])) == max(
        1, cores // 2
    )
    assert worker_threads(parse(["--detector-threads", "3", *multi, "2"])) == 3
    assert worker_threads(parse(["--runner", "DataflowRunner"])) == 0  # remote: each worker counts its own


def test_thread_pools_share_the_cores_on_spark_and_flink_started_here():
    cores = usable_cores()
    spark = ["--runner", "SparkRunner", "--spark_master_url", "local[2]"]
    flink = ["--runner", "FlinkRunner", "--flink_master", "[local]"]
    assert worker_threads(parse(spark)) == cores  # LOOPBACK: the SDK workers are threads of the launcher
    assert worker_threads(parse(flink)) == cores
    process = ["--environment_type", "PROCESS", "--environment_config", "{}", "--sdk_worker_parallelism", "2"]
    assert worker_threads(parse([*spark, *process])) == max(1, cores // 2)
    assert worker_threads(parse([*flink, *process, "--parallelism", "2"])) == max(1, cores // 2)
    cluster = ["--runner", "SparkRunner", "--spark_master_url", "spark://127.0.0.1:7077", *process]
    assert worker_threads(parse(cluster)) == 0  # how many workers a master runs is its own setting
    with pytest.raises(ValueError, match="--detector-threads must be >= 1"):
        worker_threads(parse(["--detector-threads", "0"]))
