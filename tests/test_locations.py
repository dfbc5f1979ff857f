"""Location tokens and the grounded-caption format, against transformers' Kosmos-2 code as reference."""

import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers.models.kosmos2 import processing_kosmos2 as hf

from grit_pipeline.locations import (
    Box,
    box_to_cells,
    box_to_tokens,
    cells_to_box,
    parse_grounded_caption,
    phrase_problem,
    render_grounded_caption,
    strip_offsets,
)
from grit_pipeline.markup import tag_character


@pytest.fixture(scope="module")
def kosmos2_processor():
    """A real Kosmos2Processor built offline around a tiny Unigram tokenizer (only its tag insertion is used)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPImageProcessor, Kosmos2Processor, XLMRobertaTokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=60, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(["a dog on grass", "a cat and a red ball"] * 5, trainer)
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    return Kosmos2Processor(image_processor=CLIPImageProcessor(), tokenizer=fast)


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
any_float = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False)
num_patches = st.sampled_from([8, 16, 32, 64])


@st.composite
def valid_boxes(draw):
    x1, x2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(unit, min_size=2, max_size=2, unique=True)))
    return Box(x1, y1, x2, y2)


def test_spec_check_value():
    # docs/grit.md section 3: cells 44 and 863 decode to this box.
    assert cells_to_box(44, 863).as_tuple() == (0.390625, 0.046875, 0.984375, 0.828125)
    assert box_to_tokens((0.390625, 0.046875, 0.984375, 0.828125)) == "<patch_index_0044><patch_index_0863>"


@pytest.mark.parametrize(
    ("box", "cells"),
    [
        ((0.0, 0.0, 1.0, 1.0), (0, 1023)),  # x2 = 1 stays in the last cell (the 0.99999 clamp)
        ((-0.3, -1.0, 2.0, 5.0), (0, 1023)),  # out of range: clamped, not an error
        ((0.5, 0.5, 0.5, 0.5), (528, 528)),  # zero area
        ((0.9, 0.9, 0.1, 0.1), (924, 99)),  # inverted: tokens still produced
        ((1.0, 1.0, 1.0, 1.0), (1023, 1023)),
    ],
)
def test_degenerate_boxes_never_crash(box, cells):
    assert box_to_cells(box) == cells


def test_non_finite_coordinates_are_a_clear_error():
    with pytest.raises(ValueError, match="finite"):
        box_to_cells((math.nan, 0.0, 0.5, 0.5))


@given(valid_boxes(), num_patches)
def test_box_to_cells_and_back_stays_within_one_cell(box, p):
    ul, lr = box_to_cells(box, p)
    assert 0 <= ul < p * p and 0 <= lr < p * p
    decoded = cells_to_box(ul, lr, p)
    for original, back in zip(box.as_tuple(), decoded.as_tuple()):
        assert abs(original - back) <= 1.0 / p + 1e-9
    assert 0.0 <= decoded.x_min <= decoded.x_max <= 1.0 and 0.0 <= decoded.y_min <= decoded.y_max <= 1.0


@given(any_float, any_float, any_float, any_float, num_patches)
def test_any_box_gives_cells_in_range(x1, y1, x2, y2, p):
    ul, lr = box_to_cells((x1, y1, x2, y2), p)
    assert 0 <= ul < p * p and 0 <= lr < p * p


def _formulas_agree(box: Box, p: int = 32) -> bool:
    """Where ours and transformers' lower-right formula must agree (docs/grit.md section 3).

    They differ where x2 * P or y2 * P is an exact integer, and where floating point makes
    ``x2 * P - 1`` an integer (a tiny x2 gives transformers a negative cell).
    """
    return all(edge % 1 != 0 and (edge - 1) % 1 != 0 for edge in (box.x_max * p, box.y_max * p))


@given(valid_boxes(), num_patches)
def test_agrees_with_transformers_coordinate_to_patch_index(box, p):
    assume(_formulas_agree(box, p))
    assert box_to_cells(box, p) == hf.coordinate_to_patch_index(box.as_tuple(), p)


@given(st.integers(0, 1023), st.integers(0, 1023))
def test_cells_to_box_agrees_with_transformers(ul, lr):
    assert cells_to_box(ul, lr).as_tuple() == pytest.approx(hf.patch_index_to_coordinate(ul, lr, 32))


# Captions without the format's reserved characters; words and spaces so spans can be drawn from them.
caption_text = st.text(
    alphabet=st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), min_size=1, max_size=60
).filter(lambda text: tag_character(text) is None)  # no bracket, nor a look-alike NFKC turns into one


@st.composite
def captions_with_spans(draw):
    caption = draw(caption_text)
    cuts = sorted(draw(st.lists(st.integers(0, len(caption)), max_size=8, unique=True)))
    spans = []
    for start, end in zip(cuts[::2], cuts[1::2]):
        if phrase_problem(caption[slice(*strip_offsets(caption, start, end))]) is None:
            spans.append((start, end, draw(st.lists(valid_boxes(), min_size=1, max_size=3))))
    return caption, spans


@given(captions_with_spans())
def test_render_then_parse_returns_spans_and_boxes(example):
    caption, spans = example
    text = render_grounded_caption(caption, spans)
    assert text.startswith("<grounding>")
    assert all(p == p.strip() for p in re.findall(r"<phrase>(.*?)</phrase>", text, re.S))
    clean, entities = parse_grounded_caption(text)
    assert clean == caption.strip()
    shift = len(caption) - len(caption.lstrip())
    assert len(entities) == len(spans)
    for (name, (start, end), boxes), (s, e, b) in zip(entities, spans):
        phrase_start, phrase_end = strip_offsets(caption, s, e)  # whitespace and Cf characters stay outside
        assert name == caption[phrase_start:phrase_end]
        assert clean[start:end] == name
        assert start == phrase_start - shift
        assert len(boxes) == len(b)
        for got, want in zip(boxes, b):
            assert all(abs(g - w) <= 1 / 32 + 1e-9 for g, w in zip(got, want.as_tuple()))


def test_render_orders_spans_and_rejects_overlaps():
    caption = "a dog and a cat"
    box = (0.1, 0.1, 0.4, 0.4)
    text = render_grounded_caption(caption, [(10, 15, [box]), (0, 5, [box, (0.5, 0.5, 0.9, 0.9)])])
    assert text.index("a dog") < text.index("a cat")
    assert "</delimiter_of_multi_objects/>" in text.split("a cat")[0]
    with pytest.raises(ValueError, match="overlaps"):
        render_grounded_caption(caption, [(0, 5, [box]), (2, 9, [box])])
    with pytest.raises(ValueError, match="outside"):
        render_grounded_caption(caption, [(10, 99, [box])])
    with pytest.raises(ValueError, match="no letter or digit"):
        render_grounded_caption(caption, [(5, 6, [box])])
    with pytest.raises(ValueError, match="'<' or '>'"):
        render_grounded_caption("a <b> tag", [(0, 1, [box])])
    assert render_grounded_caption(caption, [(0, 5, [])]) == "<grounding>" + caption


def test_whitespace_at_span_edges_stays_outside_the_phrase():
    # A GRIT-20M row may hold spans such as '  a dog' or 'the grass\n': the tags wrap the words only.
    caption = "  a dog  on the grass\n"
    box = (0.1, 0.1, 0.4, 0.4)
    text = render_grounded_caption(caption, [(0, 7, [box]), (12, 22, [box])])
    tokens = "<object><patch_index_0099><patch_index_0396></object>"
    assert text == f"<grounding>  <phrase>a dog</phrase>{tokens}  on <phrase>the grass</phrase>{tokens}\n"
    assert [(name, span) for name, span, _ in parse_grounded_caption(text)[1]] == [
        ("a dog", (0, 5)),
        ("the grass", (10, 19)),
    ]


@pytest.mark.parametrize(
    ("text", "start", "end", "expected"),
    [("  a dog  on", 0, 9, (2, 7)), ("a dog", 0, 5, (0, 5)), ("a \n\t", 1, 4, (4, 1)), ("", 0, 0, (0, 0))],
)
def test_strip_offsets(text, start, end, expected):
    assert strip_offsets(text, start, end) == expected


def _normalise_whitespace(text: str) -> str:
    return re.sub(r"\s*(<[^>]+>)\s*", r"\1", text)


@given(captions_with_spans())
@settings(max_examples=60)
def test_matches_kosmos2_processor_patch_token_insertion(kosmos2_processor, example):
    caption, spans = example
    assume(all(c != "\n" for c in caption))
    # transformers tags the span as given; ours keeps format characters (Cf) at its edges outside
    spans = [
        (s, e, boxes)
        for s, e, boxes in spans
        if caption[s:e].strip() == caption[slice(*strip_offsets(caption, s, e))]
    ]
    spans = [(s, e, [b for b in boxes if _formulas_agree(b)]) for s, e, boxes in spans]
    spans = [(s, e, b) for s, e, b in spans if b]
    tagged, cursor = [], 0
    for s, e, _ in spans:
        tagged += [caption[cursor:s], "<phrase>", caption[s:e], "</phrase>"]
        cursor = e
    tagged.append(caption[cursor:])
    hf_text = kosmos2_processor._insert_patch_index_tokens(
        "".join(tagged), [[b.as_tuple() for b in boxes] for _, _, boxes in spans]
    )
    ours = render_grounded_caption(caption, spans).removeprefix("<grounding>")
    assert _normalise_whitespace(ours) == _normalise_whitespace(hf_text)


tag_piece = st.sampled_from(
    ["<grounding>", "<phrase>", "</phrase>", "<object>", "</object>", "</delimiter_of_multi_objects/>"]
)
patch = st.integers(0, 1023).map(lambda i: f"<patch_index_{i:04d}>")
plain = st.text(alphabet=" abcxyz.,'é", max_size=8)


@st.composite
def grounded_texts(draw):
    """Well-formed entities mixed with stray tags and text, to exercise the parser's edge cases."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["text", "entity", "bare", "stray"]))
        if kind == "text":
            parts.append(draw(plain))
        elif kind == "stray":
            parts.append(draw(st.one_of(tag_piece, patch)))
        else:
            pairs = [draw(patch) + draw(patch) for _ in range(draw(st.integers(1, 3)))]
            obj = "<object>" + "</delimiter_of_multi_objects/>".join(pairs) + "</object>"
            parts.append((f"<phrase>{draw(plain)}</phrase>" if kind == "entity" else "") + obj)
    return "".join(parts)


@given(grounded_texts())
@settings(max_examples=300)
def test_parse_matches_transformers_exactly(text):
    assert parse_grounded_caption(text) == hf.clean_text_and_extract_entities_with_bboxes(text)


def test_parse_matches_transformers_on_its_own_example():
    text = (
        "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>"
        " warming himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911></object>."
    )
    assert parse_grounded_caption(text) == hf.clean_text_and_extract_entities_with_bboxes(text)
    assert parse_grounded_caption(text)[0] == "An image of a snowman warming himself by a fire."
