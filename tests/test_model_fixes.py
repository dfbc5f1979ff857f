"""Trainer and evaluation defects of issue 9 (items 6-8), each pinned on a case where it matters."""

from __future__ import annotations

import random

import pytest

from grit_pipeline.locations import Box
from grit_pipeline.model.examples import ExampleConfig, form_text
from grit_pipeline.model.images import centre_window
from grit_pipeline.model.referring import GenerationConfig, Query, best_iou, box_of_phrase, score


def test_containment_is_applied_after_the_crop():
    """Threshold, crop, then containment (the original order): a container cropped away frees its parts."""
    caption = "a red circle to the left of a blue square"
    row = {
        "caption": caption,
        "ref_exps": [
            [0, 41, 0.0, 0.0, 0.2, 0.2, 0.9],  # the container: outside the centre crop of a wide image
            [28, 41, 0.4, 0.1, 0.6, 0.9, 0.9],  # contained in it, inside the crop
        ],
    }
    grounded = form_text(row, centre_window(200, 100), ExampleConfig(p_grounded=1.0), random.Random(0))
    # (0.4, 0.1, 0.6, 0.9) in the crop x in [0.25, 0.75] is (0.3, 0.1, 0.7, 0.9): cells 9+3*32, 22+28*32
    assert grounded == (
        "<grounding>a red circle to the left of <phrase>a blue square</phrase>"
        "<object><patch_index_0105><patch_index_0918></object>"
    )
    # Control: with the container visible, the contained expression is still dropped.
    row["ref_exps"][0] = [0, 41, 0.3, 0.1, 0.7, 0.9, 0.9]
    assert "<phrase>a red circle to the left of a blue square</phrase>" in form_text(
        row, centre_window(200, 100), ExampleConfig(p_grounded=1.0), random.Random(0)
    )


# Hand-built generations of the prompt "<grounding><phrase>the dog</phrase>", P = 32.
DOG = (0.25, 0.25, 0.75, 0.75)  # cells 8+8*32 and 23+23*32, decoded at cell centres
DOG_TOKENS = "<patch_index_0264><patch_index_0759>"
CAT_TOKENS = "<patch_index_0000><patch_index_0099>"
PROMPT = "<grounding><phrase>the dog</phrase>"


@pytest.mark.parametrize(
    ("continuation", "box", "hit"),
    [
        (f"<object>{DOG_TOKENS}</object>", (0.265625, 0.265625, 0.734375, 0.734375), True),  # hit
        (f"<object>{CAT_TOKENS}</object>", (0.015625, 0.015625, 0.109375, 0.109375), False),  # miss
        # several boxes: the first one counts (the original's top-1), even when a later one is right
        (
            f"<object>{CAT_TOKENS}</delimiter_of_multi_objects/>{DOG_TOKENS}</object>",
            (0.015625,) * 2 + (0.109375,) * 2,
            False,
        ),
        (
            f"<object>{DOG_TOKENS}</delimiter_of_multi_objects/>{CAT_TOKENS}</object>",
            (0.265625,) * 2 + (0.734375,) * 2,
            True,
        ),
        ("<object><patch_index_0264>", None, False),  # truncated before </object>: no box, a miss
        # a box generated for another phrase is not the dog's box
        (f" runs</phrase> to <phrase>a cat</phrase><object>{DOG_TOKENS}</object>", None, False),
        ("", None, False),
    ],
)
def test_the_box_read_is_the_first_box_of_the_queried_phrase(continuation, box, hit):
    query = Query("k", b"", "", "the dog", (Box(*DOG),))
    prediction = score(query, PROMPT + continuation, 32)
    assert prediction.box == (pytest.approx(box) if box else None)
    assert prediction.hit is hit


def test_the_first_entity_is_not_taken_when_its_phrase_differs():
    # Flickr30k context: an earlier phrase of the caption is already grounded in the prompt.
    text = f"<grounding><phrase>a man</phrase><object>{CAT_TOKENS}</object> walks <phrase>the dog</phrase><object>{DOG_TOKENS}</object>"
    assert box_of_phrase(text, "the dog", 32) == pytest.approx((0.265625, 0.265625, 0.734375, 0.734375))


def test_iou_threshold_is_inclusive_and_any_true_box_counts():
    truth = (Box(0.0, 0.0, 0.5, 1.0), Box(0.5, 0.0, 1.0, 1.0))
    assert best_iou((0.0, 0.0, 0.25, 1.0), truth) == pytest.approx(0.5)  # exactly 0.5 is a hit
    assert best_iou((0.5, 0.0, 1.0, 1.0), truth) == pytest.approx(1.0)  # the second true box
    assert best_iou(None, truth) == 0.0


def test_generation_uses_the_original_settings_and_room_for_several_boxes():
    config = GenerationConfig()
    assert config.no_repeat_ngram_size == 3
    # A phrase with three boxes needs <object> + 3 pairs + 2 delimiters + </object> = 10 tokens.
    assert config.max_new_tokens >= 10


def test_text_after_a_tag_tokenises_as_kosmos2processor_does():
    """The chosen behaviour (README, "Tokenisation"): Kosmos2Processor's, not the original's caption-once ids.

    Each stretch between tags is tokenised on its own with a word-start piece, so a phrase glued to
    punctuation ("beach.") differs from the plain caption by a lone "▁" before the ".".
    """
    from PIL import Image

    from grit_pipeline.model.examples import encode_text
    from grit_pipeline.model.processor import build_processor, train_tokenizer

    caption = "a dog runs on the beach."
    processor = build_processor(train_tokenizer([caption, "the beach", "a dog"] * 3, 512), image_size=32)
    grounded = "<grounding>a dog runs on <phrase>the beach</phrase><object><patch_index_0001><patch_index_0002></object>."
    reference = processor(
        text=grounded, images=Image.new("RGB", (32, 32)), num_image_tokens=64, add_eos_token=True
    )
    assert encode_text(processor.tokenizer, grounded, 64, 256)[0] == reference["input_ids"]
    tags = set(processor.tag_tokens) | {"<patch_index_0001>", "<patch_index_0002>"}
    words = [t for t in processor.tokenizer.tokenize(grounded) if t.strip() not in tags]
    assert words[-2:] == ["▁", "."] and "." not in processor.tokenizer.tokenize(caption)[-1:]
