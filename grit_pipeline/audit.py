"""The corpus builder's own quality against human boxes: the text and grounding stages on Flickr30k Entities.

Every sentence of the split goes through exactly what `grit build` runs on a row: the fetch
stage's ``decode_image`` (check, resize, re-encode), ``TextStage.parse`` (the GRIT text rules) and the
detector's ``ground`` on the parsed noun chunks (the Beam job's ``GroundFn`` makes the same calls).
Measured against the human phrases that have boxes, each mention on its own (an entity named twice
in a sentence is two mentions, each with the entity's boxes):

- phrase recall of the text stage: share of human mentions that are a noun chunk / an expression
  exactly (same characters), or overlap one;
- matching, one to one and greedy by score: a produced (chunk, box) pair stands for the mention
  its chunk overlaps most; pairs are visited by falling score (ties: chunk order, then box
  order), and each takes the not yet matched box of its mention with the highest IoU >= 0.5
  (ties: the earlier box). A human box is matched by at most one pair and a pair matches at
  most one human box. Greedy, not optimal (Hungarian) matching: it is what COCO-style detection
  evaluation does, and it makes the matching at a higher threshold the prefix of the matching at a
  lower one, so one matching serves the whole sweep;
- box precision at IoU >= 0.5: share of produced pairs that matched a human box. Pairs whose chunk
  stands for no boxed mention (none overlaps, or ``nobndbox``/``scene``/``notvisual``) cannot be
  judged: counted apart, as ``unjudged``;
- box recall at IoU >= 0.5: share of human boxes, per mention, that a pair matched.

Box figures are given per score threshold of a sweep. The detector runs once at the lowest one:
the build keeps scores strictly above the threshold before NMS, and a box under the threshold can
never suppress one above it, so filtering afterwards gives what a build at each threshold gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from grit_pipeline.evalsets.flickr30k import Phrase, Sentence
from grit_pipeline.evalsets.intervals import wilson_interval
from grit_pipeline.grounding.base import GroundingRequest, GroundingResult
from grit_pipeline.text import CharSpan, ParsedCaption

IOU_THRESHOLD = 0.5
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
PARSE_CHUNK = 64  # sentences parsed, then grounded, per step (bounds memory, moves the progress bar)


@dataclass(frozen=True)
class Rate:
    """``hits`` of ``total``, with its Wilson 95 % interval."""

    hits: int
    total: int

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {"value": self.value, "hits": self.hits, "total": self.total, "ci95": list(self.interval)}

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.total)


@dataclass(frozen=True)
class PairOutcome:
    """One produced (chunk, box) pair: its score, whether it can be judged, whether it is right."""

    score: float
    judged: bool
    correct: bool


@dataclass(frozen=True)
class SentenceOutcome:
    chunk_exact: int
    chunk_overlap: int
    expression_exact: int
    expression_overlap: int
    phrases: int  # human phrases with boxes
    pairs: tuple[PairOutcome, ...]
    # per human box of each mention: the score of the produced box matched to it (None: unmatched)
    human_boxes: tuple[float | None, ...]


def _overlap(a: CharSpan, phrase: Phrase) -> int:
    return max(0, min(a.end, phrase.end) - max(a.start, phrase.start))


def mention_of(span: CharSpan, phrases: Sequence[Phrase]) -> int | None:
    """The index of the human mention ``span`` overlaps most (the earlier one on a tie), or None."""
    best = max(range(len(phrases)), key=lambda i: (_overlap(span, phrases[i]), -i), default=None)
    return best if best is not None and _overlap(span, phrases[best]) > 0 else None


def phrase_of(span: CharSpan, phrases: Sequence[Phrase]) -> Phrase | None:
    """The human phrase ``span`` overlaps most (the earlier one on a tie), or None."""
    index = mention_of(span, phrases)
    return None if index is None else phrases[index]


def text_recall(parsed: ParsedCaption, boxed: Sequence[Phrase]) -> tuple[int, int, int, int]:
    """(chunk exact, chunk overlap, expression exact, expression overlap) counts over ``boxed``."""
    chunks = list(parsed.noun_chunks)
    expressions = [r.span for r in parsed.ref_exps]

    def counts(spans: list[CharSpan]) -> tuple[int, int]:
        exact = sum(any((s.start, s.end) == (p.start, p.end) for s in spans) for p in boxed)
        overlap = sum(any(_overlap(s, p) > 0 for s in spans) for p in boxed)
        return exact, overlap

    return (*counts(chunks), *counts(expressions))


def judge(sentence: Sentence, parsed: ParsedCaption, result: GroundingResult | None) -> SentenceOutcome:
    """Text recall and every produced pair of one sentence, matched one to one to its human boxes."""
    boxed = [p for p in sentence.phrases if p.boxes]
    recall = text_recall(parsed, boxed) if not parsed.reject_reason else (0, 0, 0, 0)
    produced = result.boxes if result is not None else ()
    # (score, chunk index, box index, mention index or None, box) of every produced pair.
    pairs = [
        (candidate.score, c, b, mention_of(chunk, sentence.phrases), candidate.box)
        for c, (chunk, scored) in enumerate(zip(parsed.noun_chunks, produced))
        for b, candidate in enumerate(scored)
    ]
    matched: dict[tuple[int, int], float] = {}  # (mention, human box) -> score of the pair matching it
    outcomes = []
    for score, _, _, mention, box in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        truths = sentence.phrases[mention].boxes if mention is not None else ()
        if not truths:
            outcomes.append(PairOutcome(score, False, False))
            continue
        free = [(box.iou(t), -i, i) for i, t in enumerate(truths) if (mention, i) not in matched]
        best = max(free, default=None)
        correct = best is not None and best[0] >= IOU_THRESHOLD
        if correct:
            matched[(mention, best[2])] = score
        outcomes.append(PairOutcome(score, True, correct))
    human = tuple(
        matched.get((m, i)) for m, p in enumerate(sentence.phrases) if p.boxes for i in range(len(p.boxes))
    )
    return SentenceOutcome(*recall, len(boxed), tuple(outcomes), human)


def ground_sentences(
    sentences: Sequence[Sentence], parsed: Sequence[ParsedCaption], detector, images, batch_size: int
) -> list:
    """The detector's result per sentence (None when the text stage rejected it), in batches."""
    results: list[GroundingResult | None] = [None] * len(sentences)
    todo = [i for i, p in enumerate(parsed) if not p.reject_reason]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        requests = [
            GroundingRequest(images(sentences[i]), parsed[i].caption, parsed[i].noun_chunks) for i in batch
        ]
        for i, result in zip(batch, detector.ground(requests)):
            results[i] = result
    return results


def sweep(outcomes: Iterable[SentenceOutcome], thresholds: Sequence[float]) -> list[dict]:
    """Box precision and recall per threshold (pairs and human boxes with score strictly above it)."""
    outcomes = list(outcomes)
    pairs = [p for o in outcomes for p in o.pairs]
    human = [s for o in outcomes for s in o.human_boxes]
    rows = []
    for threshold in sorted(thresholds):
        kept = [p for p in pairs if p.score > threshold]
        judged = [p for p in kept if p.judged]
        precision = Rate(sum(p.correct for p in judged), len(judged))
        recall = Rate(sum(s is not None and s > threshold for s in human), len(human))
        rows.append({
            "threshold": threshold, "boxes": len(kept), "unjudged": len(kept) - len(judged),
            "precision": precision.as_dict(), "recall": recall.as_dict(),
        })  # fmt: skip
    return rows


def summarise(outcomes: Sequence[SentenceOutcome], thresholds: Sequence[float]) -> dict:
    """The audit's figures: text-stage phrase recall and the box sweep."""
    phrases = sum(o.phrases for o in outcomes)
    fields = ("chunk_exact", "chunk_overlap", "expression_exact", "expression_overlap")
    text = {name: Rate(sum(getattr(o, name) for o in outcomes), phrases).as_dict() for name in fields}
    return {
        "sentences": len(outcomes),
        "human_phrases_with_boxes": phrases,
        "human_boxes": sum(len(o.human_boxes) for o in outcomes),
        "iou_threshold": IOU_THRESHOLD,
        "interval": "Wilson score, 95 % (phrases and boxes taken as independent)",
        "text_stage_phrase_recall": text,
        "boxes": sweep(outcomes, thresholds),
    }


def audit(
    sentences: Sequence[Sentence], text_stage, detector, config, images, thresholds, progress=None
) -> dict:
    """Run the build's text and grounding stages over ``sentences`` and summarise against the humans.

    ``config`` is the DetectorConfig ``detector`` was loaded with (its threshold at most the sweep's
    lowest); ``images(sentence)`` gives the PIL image the build would ground.
    """
    if config.box_threshold > min(thresholds):
        raise ValueError(
            f"the detector keeps scores above {config.box_threshold}, the sweep starts at {min(thresholds)}"
        )
    outcomes = []
    for start in range(0, len(sentences), PARSE_CHUNK):
        part = sentences[start : start + PARSE_CHUNK]
        parsed = text_stage.parse([s.text for s in part])
        results = ground_sentences(part, parsed, detector, images, config.batch_size)
        outcomes += [judge(s, p, r) for s, p, r in zip(part, parsed, results)]
        if progress is not None:
            progress.update(len(part))
    return summarise(outcomes, thresholds)
