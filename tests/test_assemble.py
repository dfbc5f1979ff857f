"""From parsed spans and detections to GRIT rows and the grounded caption."""

import pytest

from grit_pipeline.assemble import assemble_spans, grounded_caption, grounded_caption_from_rows
from grit_pipeline.grounding.base import GroundingResult, ScoredBox
from grit_pipeline.locations import Box, parse_grounded_caption
from grit_pipeline.schemas import GroundedSpan, spans_from_column

DOG = ScoredBox(Box(0.1, 0.1, 0.5, 0.6), 0.9)
BALL = ScoredBox(Box(0.6, 0.6, 0.7, 0.7), 0.8)
PARK = ScoredBox(Box(0.0, 0.0, 1.0, 1.0), 0.7)


@pytest.fixture(scope="module")
def parsed(nlp):
    from grit_pipeline.text import TextStage

    return TextStage(nlp=nlp).parse(["two dogs playing with a red ball in the park"])[0]


def test_rows_follow_the_grit_layout(parsed):
    # chunks: "two dogs", "a red ball", "the park"; the park gets no box
    result = GroundingResult(boxes=((DOG,), (BALL, PARK), ()))
    assembled = assemble_spans(parsed, result)
    chunks = spans_from_column(assembled.noun_chunks)
    assert [(s.start, s.end, s.score) for s in chunks] == [(0, 8, 0.9), (22, 32, 0.8), (22, 32, 0.7)]
    exprs = spans_from_column(assembled.ref_exps)
    caption = parsed.caption
    assert [caption[s.start : s.end] for s in exprs] == [
        caption,
        "a red ball in the park",
        "a red ball in the park",
    ]
    # every expression inherits its chunk's boxes and scores
    assert [s.box for s in exprs] == [DOG.box, BALL.box, PARK.box]


def test_grounded_caption_applies_containment(parsed):
    assembled = assemble_spans(parsed, GroundingResult(boxes=((DOG,), (BALL,), ())))
    clean, entities = parse_grounded_caption(assembled.grounded_caption)
    assert clean == parsed.caption
    assert [name for name, _, _ in entities] == [parsed.caption]  # the contained ball expression is left out


def test_an_ungrounded_container_does_not_hide_what_it_contains(parsed):
    assembled = assemble_spans(parsed, GroundingResult(boxes=((), (BALL, PARK), ())))
    _, entities = parse_grounded_caption(assembled.grounded_caption)
    assert [(name, len(boxes)) for name, _, boxes in entities] == [("a red ball in the park", 2)]


def test_misaligned_detections_are_an_error(parsed):
    with pytest.raises(ValueError, match="3 chunks"):
        assemble_spans(parsed, GroundingResult(boxes=((DOG,),)))


def test_min_score_and_partial_overlaps():
    caption = "a dog near a cat"
    spans = [
        GroundedSpan(0, 10, Box(0.1, 0.1, 0.2, 0.2), 0.9),
        GroundedSpan(6, 16, Box(0.3, 0.3, 0.4, 0.4), 0.9),  # partly overlaps the first: left out
        GroundedSpan(11, 16, Box(0.5, 0.5, 0.6, 0.6), 0.5),
    ]
    _, entities = parse_grounded_caption(grounded_caption(caption, spans))
    assert [name for name, _, _ in entities] == ["a dog near", "a cat"]
    _, entities = parse_grounded_caption(grounded_caption(caption, spans, min_score=0.65))
    assert [name for name, _, _ in entities] == ["a dog near"]


def test_grounded_caption_from_grit20m_rows():
    caption = "a wire hanger with a paper cover that reads we heart our customers"
    rows = [[19.0, 66.0, 0.0, 0.1, 0.5, 0.7, 0.74], [0.0, 66.0, 0.1, 0.2, 0.9, 0.9, 0.68]]
    _, entities = parse_grounded_caption(grounded_caption_from_rows(caption, rows))
    assert [(name, span) for name, span, _ in entities] == [(caption, (0, 66))]
    assert grounded_caption_from_rows(caption, rows, min_score=0.7).count("<phrase>") == 1
    assert grounded_caption_from_rows(caption, None) == "<grounding>" + caption


def test_whitespace_in_a_caption_stays_out_of_stored_spans_and_phrases(nlp):
    import re

    from grit_pipeline.shards.checks import row_problems
    from grit_pipeline.text import TextStage

    caption = "  a dog  on\n\nthe grass  "  # stored as given; spans and phrases trimmed
    parsed = TextStage(nlp=nlp).parse([caption])[0]
    assembled = assemble_spans(parsed, GroundingResult(boxes=tuple((DOG,) for _ in parsed.noun_chunks)))
    stored = [
        caption[s.start : s.end]
        for c in (assembled.noun_chunks, assembled.ref_exps)
        for s in spans_from_column(c)
    ]
    assert stored and all(text == text.strip() for text in stored)
    phrases = re.findall(r"<phrase>(.*?)</phrase>", assembled.grounded_caption, re.S)
    assert phrases == ["a dog  on\n\nthe grass"]
    row = {
        "key": "k",
        "caption": caption,
        "noun_chunks": assembled.noun_chunks,
        "ref_exps": assembled.ref_exps,
    }
    assert (
        row_problems({**row, "grounded_caption": assembled.grounded_caption}, check_grounded_caption=True)
        == []
    )
