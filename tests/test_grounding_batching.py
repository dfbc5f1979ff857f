"""Batch invariance of the hf backend, our preprocessing against transformers', shape buckets, and
failure isolation, on the tiny random Grounding DINO saved with save_pretrained and loaded back."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from grit_pipeline.grounding import DetectorConfig, GroundingRequest, load_detector, save_tiny_detector
from grit_pipeline.grounding.batching import GroundingError, ShapeBuckets, ground_isolated
from grit_pipeline.grounding.preprocess import ImageSpec, pixel_batch, prepare_bytes, prepare_image
from grit_pipeline.text import CharSpan

torch.set_num_threads(1)  # the test machine's two cores are shared

CAPTION, SPANS = "a dog on the grass near a red car", (CharSpan(0, 5), CharSpan(9, 18), CharSpan(24, 33))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_detector(tmp_path_factory.mktemp("tiny") / "grounding-dino")


def detector_for(tiny_dir, **kwargs):
    return load_detector(DetectorConfig(model=str(tiny_dir), box_threshold=0.5, nms_iou=1.0, **kwargs))


def noise_image(seed, size):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def flat(results):
    return [[[(sb.score, *sb.box.as_tuple()) for sb in span] for span in r.boxes] for r in results]


def mixed_requests():
    sizes = [(160, 120), (300, 120), (120, 200), (160, 120), (500, 130)]  # four processed shapes
    return [GroundingRequest(noise_image(i, size), CAPTION, SPANS) for i, size in enumerate(sizes)]


@pytest.mark.parametrize("max_stretch", [0.0, 0.03])
def test_a_mixed_size_batch_gives_each_image_the_boxes_it_gets_alone(tiny_dir, max_stretch):
    detector = detector_for(tiny_dir, batch_size=8, max_stretch=max_stretch)
    batch = mixed_requests()
    together = flat(detector.ground(batch))
    alone = [flat(detector.ground([request]))[0] for request in batch]
    assert sum(len(span) for row in alone for span in row) > 0
    for got, want in zip(together, alone):
        assert [len(span) for span in got] == [len(span) for span in want]
        for got_span, want_span in zip(got, want):
            assert np.allclose(got_span, want_span, atol=1e-4)


def test_prepared_pixels_match_the_transformers_image_processor(tiny_dir):
    detector = detector_for(tiny_dir, max_stretch=0.0)
    processor = detector.processor.image_processor
    for image in (noise_image(0, (333, 250)), noise_image(1, (90, 400))):
        want = processor(image, return_tensors="pt")["pixel_values"]
        got = pixel_batch(
            [prepare_image(image, detector.image_spec)], detector.image_spec, torch.device("cpu")
        )
        assert got.shape == want.shape
        # Resampled within one 8-bit level of Pillow's (one level is 1 / 255 / std after normalising).
        level = 1 / 255 / min(detector.image_spec.std)
        assert (got - want).abs().max() <= level + 1e-5
        assert (got - want).abs().mean() < 0.05 * level


def test_images_get_canonical_shapes_and_common_ratios_the_processors_size():
    spec = ImageSpec(shortest_edge=800, longest_edge=1333)
    assert spec.target_shape(640, 480) == (800, 1067)  # the processor's 800 x 1066.7, rounded
    assert spec.target_shape(1000, 1000) == (800, 800)
    assert spec.target_shape(1920, 1080) == (750, 1333)  # 16:9: the processor's own size
    assert spec.target_shape(1600, 1000) == spec.target_shape(1610, 1000)  # one shape for both
    assert ImageSpec(max_stretch=0).target_shape(640, 480) == (800, 1066)


@pytest.mark.parametrize("max_stretch", [0.0, 0.03])
def test_a_degenerate_image_size_is_a_clear_error(max_stretch):
    with pytest.raises(ValueError, match=r"4000x1 image resizes to 1333x0"):
        ImageSpec(max_stretch=max_stretch).target_shape(4000, 1)


def test_jpeg_bytes_decode_at_reduced_scale_to_the_same_shape():
    buffer = io.BytesIO()
    noise_image(3, (1700, 1000)).save(buffer, format="JPEG")
    spec = ImageSpec(shortest_edge=200, longest_edge=400)
    assert prepare_bytes(buffer.getvalue(), spec).shape == spec.target_shape(1700, 1000) == (200, 336)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_shape_buckets_release_full_batches_of_one_shape():
    buckets = ShapeBuckets(batch_size=2, max_held=10)
    assert buckets.add("a", 1) == []
    assert buckets.add("b", 2) == []
    assert buckets.add("a", 3) == [[1, 3]]
    assert buckets.flush() == [[2]]
    assert buckets.held == 0


def test_shape_buckets_bound_what_they_hold_and_how_long():
    buckets = ShapeBuckets(batch_size=3, max_held=3)
    for key, item in [("a", 1), ("b", 2), ("a", 3)]:
        assert buckets.add(key, item) == []
    assert buckets.add("c", 4) == [[1, 3]]  # over max_held: the fullest bucket leaves early
    clock = FakeClock()
    timed = ShapeBuckets(batch_size=4, max_held=10, max_wait_s=0.5, clock=clock)
    assert timed.add("a", 1) == []
    clock.now = 0.6
    assert timed.add("b", 2) == [[1]]  # "a" waited over 0.5 s
    assert timed.flush() == [[2]]


def test_when_too_much_is_held_the_oldest_rows_bucket_leaves_not_the_fullest():
    buckets = ShapeBuckets(batch_size=4, max_held=4)
    for key, item in [("rare", 1), ("common", 2), ("common", 3), ("common", 4)]:
        assert buckets.add(key, item) == []
    assert buckets.add("common", 5) == [[2, 3, 4, 5]]  # full: leaves as usual
    for key, item in [("common", 6), ("common", 7), ("other", 8)]:
        assert buckets.add(key, item) == []
    # Five held: the rare row has waited longest, so its bucket goes, not the fuller "common".
    assert buckets.add("other", 9) == [[1]]
    assert buckets.held == 4


def test_an_image_that_makes_the_detector_raise_costs_only_itself(tiny_dir):
    detector = detector_for(tiny_dir, batch_size=8, max_stretch=0.0)
    good = mixed_requests()[:3]
    # A 4000x1 image: the processed height would be 0 pixels, so grounding it raises.
    bad = GroundingRequest(Image.new("RGB", (4000, 1)), CAPTION, SPANS)
    with pytest.raises(ValueError):
        detector.ground([*good[:2], bad, good[2]])
    results = ground_isolated(detector, [*good[:2], bad, good[2]])
    assert isinstance(results[2], GroundingError)
    assert "ValueError" in results[2].error and "4000x1" in results[2].error
    assert flat([results[i] for i in (0, 1, 3)]) == flat(detector.ground(good))
