"""Caption normalisation and character-span -> token mapping, on the tiny WordPiece tokenizer."""

import pytest

from grit_pipeline.grounding import OVER_TOKEN_LIMIT, SPAN_HAS_NO_TOKENS
from grit_pipeline.grounding.spans import normalize_caption, span_tokens, validate_spans
from grit_pipeline.grounding.tiny import build_tokenizer
from grit_pipeline.text import CharSpan


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("vocab"))


def map_spans(tokenizer, caption, spans, max_length=256):
    """Token strings of each span, and the errors, as the hf backend computes them."""
    prompt = normalize_caption(caption)
    encoded = tokenizer(prompt.text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    last_end = max(end for _, end in offsets)
    mapped = span_tokens(offsets, prompt, spans, len(offsets), truncated=last_end < len(prompt.text))
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    return [[pieces[i] for i in tokens] for tokens in mapped.tokens], mapped.errors


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A Dog", "a dog."),
        ("a dog.", "a dog."),
        ("  Two CATS \n", "two cats."),
        ("what is this?", "what is this?."),
        ("İstanbul at night", "i̇stanbul at night."),  # "İ".lower() is two code points
    ],
)
def test_normalize_caption_lowercases_strips_and_ends_with_a_period(caption, expected):
    assert normalize_caption(caption).text == expected


def test_normalized_offsets_point_back_to_the_same_characters():
    caption = "  Ünder the İstanbul BRIDGE"
    prompt = normalize_caption(caption)
    for start, end in [(2, 7), (8, 11), (12, 20), (21, 27)]:
        span = prompt.to_prompt(CharSpan(start, end))
        assert prompt.text[span.start : span.end] == caption[start:end].lower()


def test_spans_exclude_neighbouring_punctuation(tokenizer):
    caption = "a dog, a cat; and (a bird)!"
    spans = [CharSpan(0, 5), CharSpan(7, 12), CharSpan(19, 25)]
    tokens, errors = map_spans(tokenizer, caption, spans)
    assert tokens == [["a", "dog"], ["a", "cat"], ["a", "bird"]]
    assert errors == {}


def test_repeated_words_map_to_their_own_occurrence(tokenizer):
    caption = "a dog and a dog"
    first, second = map_spans(tokenizer, caption, [CharSpan(0, 5), CharSpan(10, 15)])[0]
    assert first == second == ["a", "dog"]
    prompt = normalize_caption(caption)
    encoded = tokenizer(prompt.text, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    mapped = span_tokens(offsets, prompt, [CharSpan(0, 5), CharSpan(10, 15)], len(offsets), False)
    assert mapped.tokens == ((1, 2), (4, 5))


def test_non_ascii_spans_map_through_accent_stripping_and_unknown_characters(tokenizer):
    caption = "A café in Zürich with a 狗 and İstanbul"
    spans = [CharSpan(0, 6), CharSpan(10, 16), CharSpan(22, 25), CharSpan(30, 38)]
    tokens, errors = map_spans(tokenizer, caption, spans)
    assert errors == {}
    assert tokens[0] == ["a", "c", "##a", "##f", "##e"]  # accents stripped by the uncased tokenizer
    assert "".join(t.removeprefix("##") for t in tokens[1]) == "zurich"
    assert tokens[2] == ["a", "[UNK]"]  # unknown characters still have offsets
    assert "".join(t.removeprefix("##") for t in tokens[3]) == "istanbul"


def test_a_span_of_whitespace_has_no_tokens(tokenizer):
    tokens, errors = map_spans(tokenizer, "a  dog", [CharSpan(1, 2), CharSpan(3, 6)])
    assert tokens == [[], ["dog"]]
    assert errors == {0: SPAN_HAS_NO_TOKENS}


def test_spans_past_the_token_limit_are_rejected_and_earlier_ones_kept(tokenizer):
    words = ["dog"] * 300
    caption = " ".join(words)
    spans = [CharSpan(4 * i, 4 * i + 3) for i in (0, 253, 254, 299)]
    tokens, errors = map_spans(tokenizer, caption, spans)
    # 256 tokens = [CLS] + 254 words + [SEP]: words 0..253 are seen, 254 and later are not.
    assert tokens[:2] == [["dog"], ["dog"]]
    assert errors == {2: OVER_TOKEN_LIMIT, 3: OVER_TOKEN_LIMIT}


def test_a_smaller_token_limit_applies_the_same_policy(tokenizer):
    tokens, errors = map_spans(
        tokenizer, "a dog on a red mat", [CharSpan(0, 5), CharSpan(9, 18)], max_length=6
    )
    assert tokens[0] == ["a", "dog"]
    assert errors == {1: OVER_TOKEN_LIMIT}


@pytest.mark.parametrize("span", [CharSpan(3, 3), CharSpan(-1, 2), CharSpan(2, 99), CharSpan(4, 2)])
def test_invalid_spans_are_a_caller_error(span):
    with pytest.raises(ValueError, match="not a non-empty range"):
        validate_spans("a dog", [span])
