"""The trainer's data side: synthetic shards, processor, crop rules, ids/masks/labels, the stream."""

from __future__ import annotations

import inspect
import io
import itertools
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from grit_pipeline.assemble import grounded_caption
from grit_pipeline.locations import Box, patch_token
from grit_pipeline.model.data import ShardBatches, StreamConfig, collate
from grit_pipeline.model.examples import (
    IGNORE_INDEX,
    ExampleConfig,
    encode_text,
    form_text,
    make_example,
    make_labels,
)
from grit_pipeline.model.images import FULL_WINDOW, centre_window
from grit_pipeline.model.processor import build_processor, processor_from_corpus, train_tokenizer
from grit_pipeline.model.synth import COLOURS, SynthConfig, iter_synth_rows, write_synth
from grit_pipeline.schemas import SHARD_SCHEMA, read_shard, spans_from_column

NUM_SLOTS = 16
TAGS = (
    "</doc>",
    "<image>",
    "</image>",
    "</chunk>",
    "</line>",
    "<phrase>",
    "</phrase>",
    "<object>",
    "</object>",
    "</delimiter_of_multi_objects/>",
    "<grounding>",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth(str(out), 60, seed=3, config=SynthConfig(image_size=32, max_aspect=1.6), rows_per_shard=25)
    return out


@pytest.fixture(scope="module")
def processor(corpus):
    return processor_from_corpus(str(corpus), image_size=32, vocab_size=512, max_rows=1000)


def test_synth_shards_follow_the_schema_with_exact_boxes(corpus):
    table = read_shard(str(corpus / "synth-00000.parquet"))
    assert table.schema.names[: len(SHARD_SCHEMA.names)] == SHARD_SCHEMA.names
    for row in table.to_pylist():
        spans = spans_from_column(row["ref_exps"])
        assert row["grounded_caption"] == grounded_caption(row["caption"], spans)
        image = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))
        assert image.shape[:2] == (row["height"], row["width"]) == (row["image_height"], row["image_width"])
        for span in spans:
            words = row["caption"][span.start : span.end].split()
            x0, y0 = round(span.box.x_min * row["width"]), round(span.box.y_min * row["height"])
            x1, y1 = round(span.box.x_max * row["width"]), round(span.box.y_max * row["height"])
            exact = (x0 / row["width"], y0 / row["height"], x1 / row["width"], y1 / row["height"])
            assert span.box.as_tuple() == pytest.approx(exact, abs=1e-12)  # whole pixels
            if words[2] == "square" and len(spans) == 1:  # a lone square fills its box exactly
                assert (image[y0:y1, x0:x1] == COLOURS[words[1]]).all()
                assert not (image[y0:y1, max(x0 - 1, 0)] == COLOURS[words[1]]).all() or x0 == 0


def test_synth_is_reproducible_from_its_seed():
    config = SynthConfig(image_size=24)
    first = [r["sha256"] for r in iter_synth_rows(5, 7, config)]
    assert first == [r["sha256"] for r in iter_synth_rows(5, 7, config)]
    assert first != [r["sha256"] for r in iter_synth_rows(5, 8, config)]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (Box(0.25, 0.0, 0.75, 1.0), Box(0.0, 0.0, 1.0, 1.0)),  # exactly the crop
        (Box(0.5, 0.25, 0.625, 0.75), Box(0.5, 0.25, 0.75, 0.75)),  # inside, moved and stretched in x
        (Box(0.15, 0.0, 0.35, 1.0), Box(0.0, 0.0, 0.2, 1.0)),  # half visible: clipped, kept
        (Box(0.2, 0.0, 0.2625, 1.0), Box(0.0, 0.0, 0.025, 1.0)),  # exactly 20 % visible: kept
        (Box(0.16, 0.0, 0.26, 1.0), None),  # 1/10 visible: dropped
        (Box(0.0, 0.0, 0.2, 0.5), None),  # entirely outside
    ],
)
def test_boxes_are_reprojected_into_the_centre_crop_with_the_20_percent_rule(box, expected):
    window = centre_window(200, 100)  # the crop keeps x in [0.25, 0.75] of the original
    projected = window.project(box)
    if expected is None:
        assert projected is None
    else:
        assert projected is not None and projected.as_tuple() == pytest.approx(expected.as_tuple())


def test_square_mode_keeps_boxes():
    box = Box(0.1, 0.2, 0.3, 0.4)
    assert FULL_WINDOW.project(box) == box


def test_every_special_token_survives_a_tokenizer_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    reloaded = type(processor).from_pretrained(tmp_path)
    for tokenizer in (processor.tokenizer, reloaded.tokenizer):
        tokens = [*TAGS, *(patch_token(k) for k in range(1024)), "<s>", "</s>", "<pad>", "<unk>"]
        ids = tokenizer.convert_tokens_to_ids(tokens)
        assert len(set(ids)) == len(tokens) and tokenizer.unk_token_id not in ids[:-1]
        for token, token_id in zip(tokens, ids):
            assert tokenizer(token, add_special_tokens=False).input_ids == [token_id]
            assert tokenizer.decode([token_id]) == token
        text = "<grounding><phrase>a red circle</phrase><object><patch_index_0044><patch_index_0863></object> above"
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text.replace(
            ">a", "> a"
        )


def test_ids_image_slot_mask_and_labels_match_the_real_processor(processor):
    text = (
        "<grounding><phrase>a red circle</phrase><object><patch_index_0001><patch_index_0100></object> above"
    )
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    reference = processor(text=text, images=image, num_image_tokens=NUM_SLOTS, add_eos_token=True)
    ids, mask = encode_text(processor.tokenizer, text, NUM_SLOTS, 256)
    assert ids == reference["input_ids"]
    assert mask == reference["image_embeds_position_mask"]
    labels = make_labels(ids, NUM_SLOTS)
    tok = processor.tokenizer
    boi, eoi = tok.convert_tokens_to_ids(["<image>", "</image>"])
    masked = [i for i, label in enumerate(labels) if label == IGNORE_INDEX]
    # <s>, <image>, every slot the processor marks, </image>: and nothing else.
    assert masked == [0, 1, *[i for i, m in enumerate(mask) if m], ids.index(eoi)]
    assert ids[1] == boi and labels[-1] == tok.eos_token_id
    assert labels[ids.index(eoi) + 1] == tok.convert_tokens_to_ids("<grounding>")


def test_generation_prompts_match_the_processor_without_eos(processor):
    prompt = "<grounding><phrase>a blue square</phrase>"
    image = Image.new("RGB", (32, 32))
    reference = processor(text=prompt, images=image, num_image_tokens=NUM_SLOTS)
    ids, mask = encode_text(processor.tokenizer, prompt, NUM_SLOTS, 256, add_eos=False)
    assert ids == reference["input_ids"] and mask == reference["image_embeds_position_mask"]
    assert processor.tokenizer.convert_ids_to_tokens(ids[-1]) == "</phrase>"


@pytest.mark.parametrize("slots", [16, 64])
def test_a_saved_processor_inserts_the_slot_count_it_was_built_for(tmp_path, slots):
    """The standard call of a reloaded processor, no count passed: as many slots as the model has."""
    from transformers import AutoProcessor

    tokenizer = train_tokenizer(["a red circle", "a blue square"] * 3, 512)
    build_processor(tokenizer, 32, num_image_tokens=slots).save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    inputs = reloaded(text="<grounding><phrase>a red circle</phrase>", images=Image.new("RGB", (32, 32)))
    assert sum(inputs["image_embeds_position_mask"]) == slots
    ids, mask = encode_text(
        reloaded.tokenizer, "<grounding><phrase>a red circle</phrase>", slots, 256, add_eos=False
    )
    assert inputs["input_ids"] == ids and inputs["image_embeds_position_mask"] == mask


def test_pixel_values_match_the_processor_on_a_square_image(processor):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    row = {"image": buffer.getvalue(), "caption": "a blue square", "ref_exps": []}
    example = make_example(row, processor, ExampleConfig(image_mode="square"), NUM_SLOTS, random.Random(0))
    reference = processor.image_processor(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(example.pixel_values, reference, atol=1e-5)


def test_text_uses_kept_expressions_above_threshold_and_drops_cropped_boxes():
    caption = "a red circle to the left of a blue square"
    row = {
        "caption": caption,
        "ref_exps": [
            [0, 12, 0.0, 0.0, 0.2, 0.2, 0.9],  # outside the centre crop of a wide image: dropped
            [0, 41, 0.3, 0.3, 0.9, 0.9, 0.5],  # contains everything, but under the 0.65 threshold
            [28, 41, 0.4, 0.1, 0.6, 0.9, 0.9],
        ],
    }
    window = centre_window(200, 100)
    grounded = form_text(row, window, ExampleConfig(p_grounded=1.0, location_grid=32), random.Random(0))
    assert grounded == (
        "<grounding>a red circle to the left of <phrase>a blue square</phrase>"
        # (0.4, 0.1, 0.6, 0.9) in the crop x in [0.25, 0.75] is (0.3, 0.1, 0.7, 0.9): cells 9+3*32, 22+28*32
        "<object><patch_index_0105><patch_index_0918></object>"
    )
    assert form_text(row, window, ExampleConfig(p_grounded=0.0), random.Random(0)) == caption
    shares = [
        form_text(row, window, ExampleConfig(p_grounded=0.5), random.Random(i)) == caption for i in range(400)
    ]
    assert 0.4 < np.mean(shares) < 0.6


def test_batches_are_padded_dicts_of_exactly_the_model_arguments(corpus, processor):
    from transformers import Kosmos2ForConditionalGeneration

    dataset = ShardBatches(
        StreamConfig(str(corpus), batch_size=8, shuffle_buffer=16),
        ExampleConfig(location_grid=8),
        processor,
        NUM_SLOTS,
    )
    index, batch, skipped = next(iter(dataset))
    assert index == 0 and skipped == {}
    assert set(batch) <= set(inspect.signature(Kosmos2ForConditionalGeneration.forward).parameters)
    assert set(batch) == {
        "pixel_values",
        "input_ids",
        "attention_mask",
        "image_embeds_position_mask",
        "labels",
    }
    pad = processor.tokenizer.pad_token_id
    lengths = batch["attention_mask"].sum(1)
    assert lengths.max() == batch["input_ids"].shape[1] and lengths.min() < lengths.max()  # dynamic padding
    for row, length in zip(range(8), lengths.tolist()):
        assert (batch["input_ids"][row, length:] == pad).all()
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        assert batch["image_embeds_position_mask"][row].sum() == NUM_SLOTS


def test_stream_resumes_at_any_batch_and_cycles_epochs(corpus, processor):
    def stream(start):
        config = StreamConfig(str(corpus), batch_size=7, shuffle_buffer=10, seed=5)
        dataset = ShardBatches(
            config, ExampleConfig(location_grid=8), processor, NUM_SLOTS, start_batch=start
        )
        return iter(dataset)

    full = stream(0)
    batches = [next(full) for _ in range(12)]  # 84 rows: past the 60-row epoch
    resumed = next(stream(10))
    assert resumed[0] == 10
    assert (resumed[1]["input_ids"] == batches[10][1]["input_ids"]).all()
    assert (resumed[1]["pixel_values"] == batches[10][1]["pixel_values"]).all()


def test_worker_processes_deliver_the_same_batches_in_the_same_order(corpus, processor):
    from grit_pipeline.model.data import make_loader

    def first(workers: int, start: int, count: int):
        config = StreamConfig(str(corpus), batch_size=5, shuffle_buffer=8, seed=2, num_workers=workers)
        loader = make_loader(
            ShardBatches(config, ExampleConfig(location_grid=8), processor, NUM_SLOTS, start)
        )
        return [(index, batch["input_ids"]) for index, batch, _ in itertools.islice(loader, count)]

    single, pooled = first(0, 0, 7), first(2, 3, 4)  # two workers, resumed at batch 3
    assert [index for index, _ in pooled] == [3, 4, 5, 6]
    for (_, expected), (_, got) in zip(single[3:], pooled, strict=True):
        assert torch.equal(expected, got)


def test_grit20m_style_shards_read_images_from_an_img2dataset_folder(tmp_path, processor):
    images = tmp_path / "images" / "00000"
    images.mkdir(parents=True)
    rows = list(iter_synth_rows(4, 1, SynthConfig(image_size=32)))
    for index, row in enumerate(rows):
        (images / f"{index:09d}.png").write_bytes(row["image"])
    table = pa.table(
        {
            "key": [f"{i:09d}" for i in range(4)],
            "caption": [r["caption"] for r in rows],
            "width": [r["width"] for r in rows],
            "height": [r["height"] for r in rows],
            "ref_exps": [r["ref_exps"] for r in rows],
        }
    )
    pq.write_table(table, tmp_path / "grit.parquet")
    config = StreamConfig(str(tmp_path / "grit.parquet"), images=str(tmp_path / "images"), batch_size=4)
    _, batch, skipped = next(iter(ShardBatches(config, ExampleConfig(location_grid=8), processor, NUM_SLOTS)))
    assert skipped == {} and batch["pixel_values"].shape == (4, 3, 32, 32)
    without = StreamConfig(str(tmp_path / "grit.parquet"), batch_size=4)
    _, batch, skipped = next(
        iter(ShardBatches(without, ExampleConfig(location_grid=8), processor, NUM_SLOTS))
    )
    assert batch is None and skipped == {"row has no image bytes": 4}


def test_collate_rejects_nothing_and_keeps_order(processor):
    examples = [
        make_example(row, processor, ExampleConfig(location_grid=8), NUM_SLOTS, random.Random(0))
        for row in iter_synth_rows(3, 2, SynthConfig(image_size=32))
    ]
    batch = collate(examples, processor.tokenizer.pad_token_id)
    for row, example in enumerate(examples):
        assert batch["input_ids"][row, : len(example.input_ids)].tolist() == example.input_ids


def test_a_word_level_unigram_for_tiny_corpora_and_the_trainer_for_real_ones():
    small = train_tokenizer(["a red circle", "a blue square"] * 20, 100)
    assert small.tokenize("a red square") == ["▁a", "▁red", "▁square"]
    words = [f"w{i}x{i * 7 % 13}" for i in range(400)]
    large = train_tokenizer([" ".join(words[i : i + 8]) for i in range(0, 392)], 120)
    assert len(large) <= 121 + 1  # the trainer's bound (plus <mask>)
    processor = build_processor(small, 32)
    assert processor.tokenizer.convert_tokens_to_ids("<patch_index_1023>") == len(processor.tokenizer) - 1
