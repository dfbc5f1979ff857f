"""Captions as Grounding DINO prompts, and noun-chunk character spans as token spans.

The model expects a lower-cased prompt that ends with ".". Lower-casing can change a string's
length (``"İ".lower()`` is two code points) and stripping moves every offset, so the prompt keeps
a map back to the original caption. Spans are then mapped to tokens with the tokenizer's offsets:
a span's tokens are those whose character range overlaps the span's.

Token limit policy: Grounding DINO reads at most 256 tokens, ``[CLS]`` and ``[SEP]`` included. The
prompt is truncated there (the text stage already rejects captions over 1,000 characters, so this
is rare); a span with any token past the cut gets the error ``over_token_limit`` and no boxes,
while the spans before it are grounded as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grit_pipeline.grounding.config import OVER_TOKEN_LIMIT, SPAN_HAS_NO_TOKENS
from grit_pipeline.text import CharSpan


@dataclass(frozen=True)
class Prompt:
    """A normalised prompt and, per original character index, where it starts in the prompt.

    ``starts`` has ``len(caption) + 1`` entries: ``starts[i]`` is the prompt offset of original
    character ``i`` (the last entry is the prompt offset just past the caption's last character).
    """

    caption: str
    text: str
    starts: tuple[int, ...]

    def to_prompt(self, span: CharSpan) -> CharSpan:
        """The prompt characters of an original-caption span."""
        return CharSpan(self.starts[span.start], self.starts[span.end])


def normalize_caption(caption: str) -> Prompt:
    """Strip, lower-case and end with "." as the model expects, keeping the offset map.

    >>> p = normalize_caption("  A Dog ")
    >>> p.text, p.to_prompt(CharSpan(2, 7)), p.text[0:5]
    ('a dog.', CharSpan(start=0, end=5), 'a dog')
    """
    pieces: list[str] = []
    starts: list[int] = []
    length = 0
    left = len(caption) - len(caption.lstrip())
    right = len(caption.rstrip())
    for i, char in enumerate(caption):
        starts.append(length)
        if left <= i < right:  # stripped whitespace contributes nothing
            lowered = char.lower()
            pieces.append(lowered)
            length += len(lowered)
    starts.append(length)
    text = "".join(pieces)
    if not text.endswith("."):
        text += "."
    return Prompt(caption=caption, text=text, starts=tuple(starts))


@dataclass(frozen=True)
class TokenSpans:
    """Per requested span: its token indices in the encoded prompt, or the reason it has none."""

    tokens: tuple[tuple[int, ...], ...]
    errors: dict[int, str]


def span_tokens(
    offsets: Sequence[tuple[int, int]],
    prompt: Prompt,
    spans: Sequence[CharSpan],
    num_tokens: int,
    truncated: bool,
) -> TokenSpans:
    """Map each original-caption span to the tokens overlapping it in the prompt.

    ``offsets`` are the tokenizer's ``offset_mapping`` of the (possibly truncated) prompt, special
    tokens as ``(0, 0)``; ``num_tokens`` its length without padding. When ``truncated``, a span
    reaching past the last kept text token is ``over_token_limit``.
    """
    # The last text character the model saw: the end of the last non-special token.
    text_tokens = [(i, s, e) for i, (s, e) in enumerate(offsets[:num_tokens]) if e > s]
    seen_end = max((e for _, _, e in text_tokens), default=0)
    tokens: list[tuple[int, ...]] = []
    errors: dict[int, str] = {}
    for index, span in enumerate(spans):
        target = prompt.to_prompt(span)
        hit = tuple(i for i, s, e in text_tokens if s < target.end and e > target.start)
        if truncated and target.end > seen_end:
            errors[index] = OVER_TOKEN_LIMIT
            hit = ()
        elif not hit:
            errors[index] = SPAN_HAS_NO_TOKENS
        tokens.append(hit)
    return TokenSpans(tokens=tuple(tokens), errors=errors)


def validate_spans(caption: str, spans: Sequence[CharSpan]) -> None:
    """Raise ValueError for a span outside the caption or empty: a caller's bug, not a data issue."""
    for span in spans:
        if not 0 <= span.start < span.end <= len(caption):
            raise ValueError(
                f"span [{span.start}, {span.end}) is not a non-empty range of the caption "
                f"(length {len(caption)}): {caption[:60]!r}"
            )
