"""The hf backend on a tiny random Grounding DINO saved with save_pretrained and loaded back."""

import json
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from grit_pipeline.grounding import (
    NO_BOX_ABOVE_THRESHOLD,
    OVER_TOKEN_LIMIT,
    TINY_DETECTOR,
    DetectorConfig,
    DetectorUnavailableError,
    GroundingRequest,
    load_detector,
    save_tiny_detector,
    tiny,
)
from grit_pipeline.grounding.hf_backend import HFDetector
from grit_pipeline.grounding.spans import normalize_caption
from grit_pipeline.grounding.tiny import cached_tiny_detector
from grit_pipeline.text import CharSpan

torch.set_num_threads(1)  # the test machine's two cores are shared


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_detector(tmp_path_factory.mktemp("tiny") / "grounding-dino")


@pytest.fixture(scope="module")
def detector(tiny_dir):
    return load_detector(DetectorConfig(model=str(tiny_dir), box_threshold=0.5, batch_size=2))


def noise_image(seed, size=(160, 120)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def requests():
    captions = [
        ("A Dog on the grass near a red car", [(0, 5), (9, 18), (24, 33)]),
        ("a cat", [(0, 5)]),
        ("two people riding bikes on a street in the old city", [(0, 10), (18, 23), (27, 35), (39, 51)]),
        ("a café, a bowl and a cup", [(0, 6), (8, 14), (19, 24)]),
        ("the dog and the dog", [(0, 7), (12, 19)]),
    ]
    return [
        GroundingRequest(noise_image(i), caption, tuple(CharSpan(s, e) for s, e in spans))
        for i, (caption, spans) in enumerate(captions)
    ]


def flat(results):
    return [[[(sb.score, *sb.box.as_tuple()) for sb in span] for span in r.boxes] for r in results]


def assert_same_results(got_results, want_results):
    """Same number of boxes per span, scores and coordinates equal within float noise."""
    assert len(got_results) == len(want_results)
    for got, want in zip(got_results, want_results):
        assert [len(span) for span in got] == [len(span) for span in want]
        for got_span, want_span in zip(got, want):
            assert np.allclose(got_span, want_span, atol=1e-4)


def test_the_tiny_detector_loads_through_from_pretrained_with_bert_delimiter_ids(tiny_dir, detector):
    assert {"config.json", "model.safetensors", "vocab.txt", "processor_config.json"} <= {
        p.name for p in tiny_dir.iterdir()
    }
    tokenizer = detector.processor.tokenizer
    # Grounding DINO hard-codes these bert-base-uncased ids as phrase delimiters.
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) == [101, 102, 1012, 1029]
    assert detector.model.config.decoder_layers >= 2


def test_results_align_with_spans_and_hold_valid_boxes_above_threshold(detector):
    batch = requests()
    results = detector.ground(batch)
    assert len(results) == len(batch)
    for request, result in zip(batch, results):
        assert len(result.boxes) == len(request.spans)
        assert result.span_errors == {}
        for span_boxes in result.boxes:
            assert [sb.score for sb in span_boxes] == sorted((sb.score for sb in span_boxes), reverse=True)
            for sb in span_boxes:
                assert sb.score > 0.5
                assert sb.box.is_valid()
    assert any(r.has_box for r in results)


def test_batched_results_equal_one_by_one_results(detector):
    batch = requests()  # same image size, captions of different lengths (text padding)
    together = flat(detector.ground(batch))
    alone = [flat(detector.ground([r]))[0] for r in batch]
    assert_same_results(together, alone)


def test_a_span_is_scored_by_the_mean_probability_of_its_own_tokens(detector):
    request = requests()[0]
    inputs, prompts, offsets = detector.encode([request])
    with torch.no_grad():
        probs = detector.model(**inputs).logits[0].sigmoid()
    tokens = {tuple(o) for o in offsets[0]}
    # "a dog" is tokens 1-2 and "a red car" tokens 7-9 of "[CLS] a dog on the grass near a red car . [SEP]".
    assert (0, 1) in tokens and (2, 5) in tokens and prompts[0].text.startswith("a dog")
    want = [probs[:, [1, 2]].mean(dim=1).max().item(), probs[:, [7, 8, 9]].mean(dim=1).max().item()]
    everything = load_detector(DetectorConfig(model=detector.config.model, box_threshold=0.0, nms_iou=1.0))
    [result] = everything.ground([GroundingRequest(request.image, request.caption, request.spans[::2])])
    assert [span[0].score for span in result.boxes] == pytest.approx(
        want, abs=0.5e-4 + 1e-6
    )  # scores are kept rounded to 1e-4


def test_no_surviving_box_gives_the_reject_reason(tiny_dir):
    strict = load_detector(DetectorConfig(model=str(tiny_dir), box_threshold=0.99))
    [result] = strict.ground(requests()[:1])
    assert not result.has_box
    assert result.reject_reason == NO_BOX_ABOVE_THRESHOLD


def test_requests_without_spans_and_spans_past_the_token_limit(detector):
    long_caption = "a dog " * 150 + "and a cat"
    spans = (CharSpan(0, 5), CharSpan(len(long_caption) - 5, len(long_caption)))
    image = noise_image(7)
    empty, long = detector.ground(
        [GroundingRequest(image, "a dog", ()), GroundingRequest(image, long_caption, spans)]
    )
    assert empty.boxes == () and empty.reject_reason == NO_BOX_ABOVE_THRESHOLD
    assert long.span_errors == {1: OVER_TOKEN_LIMIT}
    assert long.boxes[1] == ()
    assert len(normalize_caption(long_caption).text) > 256


def test_a_cuda_out_of_memory_error_halves_the_batch(tiny_dir, monkeypatch):
    # A mock: this machine has no GPU, so the out-of-memory error is raised by hand for batches of 3 or more.
    detector = HFDetector(DetectorConfig(model=str(tiny_dir), box_threshold=0.5, batch_size=5))
    real = detector._ground_batch
    sizes = []

    def fake_oom_over_two(batch):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    monkeypatch.setattr(detector, "_ground_batch", fake_oom_over_two)
    batch = requests()
    got = flat(detector.ground(batch))
    assert sizes == [5, 3, 2, 1, 2]
    assert detector.batch_size == 2
    monkeypatch.setattr(detector, "_ground_batch", real)
    assert_same_results(got, flat(detector.ground(batch)))


def test_a_hub_id_that_is_not_cached_fails_offline_with_one_line():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(DetectorUnavailableError) as raised:
        load_detector(DetectorConfig(model="IDEA-Research/grounding-dino-tiny"))
    message = str(raised.value)
    assert "\n" not in message
    assert "IDEA-Research/grounding-dino-tiny" in message and "local directory" in message


def test_a_missing_folder_and_a_missing_backend_are_clear_errors(tmp_path):
    with pytest.raises(DetectorUnavailableError, match="does not exist"):
        load_detector(DetectorConfig(model=str(tmp_path / "nothing")))
    try:
        import groundingdino  # noqa: F401
    except Exception:
        with pytest.raises(DetectorUnavailableError, match=r"groundingdino\]"):
            load_detector(DetectorConfig(model=str(tmp_path), backend="groundingdino"))


def test_config_pickles_validates_and_is_recorded_as_provenance(detector):
    config = DetectorConfig(model=TINY_DETECTOR, box_threshold=0.4, nms_iou=0.6)
    assert pickle.loads(pickle.dumps(config)) == config
    for bad in ({"box_threshold": 1.5}, {"nms_iou": -0.1}, {"batch_size": 0}, {"backend": "owl"}):
        with pytest.raises(ValueError):
            DetectorConfig(**bad)
    provenance = detector.provenance()
    assert provenance["detector"] == detector.config.model
    assert (provenance["detector_backend"], provenance["box_threshold"], provenance["nms_iou"]) == (
        "hf",
        0.5,
        0.5,
    )
    json.dumps(provenance)


def test_the_cached_tiny_detector_is_built_once_by_concurrent_callers(tmp_path, tiny_dir, monkeypatch):
    # Threads, not processes: the race on the folder is the same, and two extra interpreters
    # importing torch and transformers would cost most of this file's time budget.
    monkeypatch.setenv("GRIT_CACHE_DIR", str(tmp_path))
    barrier = threading.Barrier(2)

    def build():
        barrier.wait()
        return cached_tiny_detector()

    with ThreadPoolExecutor(2) as pool:
        paths = set(pool.map(lambda _: build(), range(2)))
    assert len(paths) == 1
    folder = paths.pop()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left behind
    # Seeded: the cached copy holds the same weights as the one the fixture saved.
    assert (folder / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    cached = load_detector(DetectorConfig(model=TINY_DETECTOR, box_threshold=0.5))
    assert cached.provenance()["detector"] == TINY_DETECTOR
    assert [len(r.boxes) for r in cached.ground(requests()[:2])] == [3, 1]


def test_a_process_that_loses_the_race_uses_the_winners_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIT_CACHE_DIR", str(tmp_path))
    final = tiny.cache_dir() / f"tiny-grounding-dino-{tiny.TINY_CACHE_VERSION}"
    real_save = tiny.save_tiny_detector

    def save_while_another_process_wins(path, seed=0):
        real_save(path, seed)
        final.mkdir()
        (final / "config.json").write_text("{}")  # the winner renamed its folder first

    monkeypatch.setattr(tiny, "save_tiny_detector", save_while_another_process_wins)
    assert tiny.cached_tiny_detector() == final
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    assert (final / "config.json").read_text() == "{}"
