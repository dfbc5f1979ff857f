"""From parsed spans and detections to GRIT rows and the Kosmos-2 grounded caption.

``noun_chunks`` and ``ref_exps`` hold one row per (span, box), as GRIT-20M does; only grounded
chunks appear, and every expression inherits its chunk's boxes and scores. All expressions are
stored (GRIT-20M keeps contained ones); the containment filter is applied when the grounded
caption is formed, by the same function the trainer uses on GRIT-20M rows (docs/grit.md
section 1, step 2, and section 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from grit_pipeline.grounding.base import GroundingResult
from grit_pipeline.locations import NUM_PATCHES_PER_SIDE, render_grounded_caption
from grit_pipeline.schemas.shard import GroundedSpan, group_by_span, spans_from_column, spans_to_column
from grit_pipeline.text import CharSpan, ParsedCaption, containment_filter


@dataclass(frozen=True)
class AssembledSpans:
    """The GRIT columns of one accepted row."""

    noun_chunks: list[list[float]]
    ref_exps: list[list[float]]
    grounded_caption: str


def select_grounding_spans(
    spans: Iterable[GroundedSpan], min_score: float | None = None
) -> list[GroundedSpan]:
    """The spans that go into a grounded caption: above ``min_score``, not contained in another.

    Spans that partly overlap a kept one (possible with non-projective parses) are left out,
    the earlier-starting, longer span winning, since the Kosmos-2 format cannot nest phrases; the
    expressions such a span contained are then considered again.
    """
    scored = [s for s in spans if min_score is None or s.score >= min_score]
    candidates = {CharSpan(s.start, s.end) for s in scored}
    while True:  # an expression left out for overlapping frees the ones it contained
        kept, _ = containment_filter(candidates)
        chosen: list[CharSpan] = []
        for span in sorted(kept, key=lambda s: (s.start, -s.end)):
            if not chosen or span.start >= chosen[-1].end:
                chosen.append(span)
        if len(chosen) == len(kept):
            break
        candidates -= set(kept) - set(chosen)
    chosen_set = set(chosen)
    return [s for s in scored if CharSpan(s.start, s.end) in chosen_set]


def grounded_caption(
    caption: str,
    spans: Iterable[GroundedSpan],
    min_score: float | None = None,
    num_patches: int = NUM_PATCHES_PER_SIDE,
) -> str:
    """The Kosmos-2 text for a caption and its grounded expressions (boxes of one span grouped)."""
    grouped = group_by_span(select_grounding_spans(spans, min_score))
    return render_grounded_caption(
        caption,
        [(start, end, [s.box for s in group]) for (start, end), group in grouped.items()],
        num_patches,
    )


def assemble_spans(
    parsed: ParsedCaption, result: GroundingResult, num_patches: int = NUM_PATCHES_PER_SIDE
) -> AssembledSpans:
    """GRIT rows for one caption: ``result.boxes`` is aligned with ``parsed.noun_chunks``."""
    if len(result.boxes) != len(parsed.noun_chunks):
        raise ValueError(
            f"detector returned boxes for {len(result.boxes)} spans, the caption has {len(parsed.noun_chunks)} chunks"
        )
    boxes_of_chunk = dict(zip(parsed.noun_chunks, result.boxes))
    chunk_rows = [
        GroundedSpan(chunk.start, chunk.end, sb.box, sb.score)
        for chunk, scored in boxes_of_chunk.items()
        for sb in scored
    ]
    expression_rows = [
        GroundedSpan(ref.span.start, ref.span.end, sb.box, sb.score)
        for ref in parsed.ref_exps
        for sb in boxes_of_chunk.get(ref.chunk, ())
    ]
    return AssembledSpans(
        noun_chunks=spans_to_column(chunk_rows),
        ref_exps=spans_to_column(expression_rows),
        grounded_caption=grounded_caption(parsed.caption, expression_rows, num_patches=num_patches),
    )


def grounded_caption_from_rows(
    caption: str, ref_exps: Sequence[Sequence[float]] | None, min_score: float | None = None
) -> str:
    """The grounded caption of a stored row (ours or GRIT-20M's ``ref_exps`` cell)."""
    return grounded_caption(caption, spans_from_column(ref_exps), min_score)
