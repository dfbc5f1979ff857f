"""One shard row -> one model example: image window, grounded or plain text, ids, masks, labels.

Text follows docs/grit.md section 3: ``ref_exps`` (or ``noun_chunks``) above the score threshold,
boxes re-projected into the crop, then the containment filter (the original's order), used
grounded with probability ``p_grounded``, else as the plain caption. The sequence is
``<s> <image> (latent_queries slots) </image> text </s>``, exactly what ``Kosmos2Processor`` builds
(plus ``</s>``); labels are the ids with -100 on ``<s>``, ``<image>``, the slots and ``</image>``
(and on padding, added by the collator), so the loss covers everything after ``</image>``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np

from grit_pipeline.assemble import select_grounding_spans
from grit_pipeline.flags import flag, flag_error, require_choice, require_min
from grit_pipeline.locations import render_grounded_caption
from grit_pipeline.markup import tag_character_problem
from grit_pipeline.model.images import CROP_MODES, decode_image, render, to_pixel_values, window_for
from grit_pipeline.schemas.shard import GroundedSpan, group_by_span, spans_from_column

IGNORE_INDEX = -100  # positions without loss, as transformers' cross-entropy expects
SPANS_COLUMNS = ("ref_exps", "noun_chunks")
MAX_LOCATION_GRID = 32  # 1,024 location tokens


@dataclass(frozen=True)
class ExampleConfig:
    """How training text is formed from a row (its fields are `grit train`'s flags too)."""

    # The original: each caption grounded with probability 0.5, else plain.
    p_grounded: float = flag(0.5, help="probability that a row's text is grounded (else its plain caption)")
    spans_column: str = flag(
        "ref_exps", choices=SPANS_COLUMNS, help="the spans grounded: ref_exps (the original) or noun_chunks"
    )
    min_score: float = flag(
        0.65, help="box score threshold re-applied at load time (the paper's box threshold)"
    )
    image_mode: str = flag(
        "centre-crop", choices=CROP_MODES, help="centre-crop (training in the original) or square resize"
    )
    location_grid: int = flag(MAX_LOCATION_GRID, help="P: P x P location cells")
    max_length: int = flag(256, help="tokens per sequence, image slots included; longer text is cut")

    def __post_init__(self) -> None:
        for name in ("p_grounded", "min_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise flag_error(self, name, "must be in [0, 1]")
        require_choice(self, spans_column=SPANS_COLUMNS, image_mode=CROP_MODES)
        if not 1 <= self.location_grid <= MAX_LOCATION_GRID:
            raise flag_error(
                self, "location_grid", f"must be in 1..{MAX_LOCATION_GRID} (1,024 location tokens)"
            )
        require_min(self, max_length=1)


@dataclass(frozen=True)
class Example:
    """Model inputs of one row, before padding."""

    pixel_values: np.ndarray  # (3, S, S) float32
    input_ids: list[int]
    image_embeds_position_mask: list[int]
    labels: list[int]


class SkipRow(ValueError):
    """A row that cannot become an example (no image, undecodable, tags in the caption, a bad span).

    The message starts with the reason, then ``:`` and the details; rows are counted by reason.
    """


def checked_spans(column, caption: str) -> list[GroundedSpan]:
    """The typed spans of a span cell, or SkipRow ``bad span`` naming the first broken one.

    Checked whether or not the row is used grounded, so a broken row is skipped every time rather
    than only when the draw picks grounded text: seven finite numbers, integer offsets (never
    truncated: ``[0.5, 5.5)`` is refused), ``0 <= start < end <= len(caption)``.
    """
    for i, values in enumerate(column or ()):
        if values is None or len(values) != 7 or any(v is None or not math.isfinite(v) for v in values):
            raise SkipRow(f"bad span: span {i} is {values}, expected 7 finite numbers")
        start, end = values[0], values[1]
        if start != int(start) or end != int(end) or not 0 <= start < end <= len(caption):
            raise SkipRow(
                f"bad span: span {i} [{start}, {end}) is not a non-empty integer range inside the "
                f"caption ({len(caption)} characters)"
            )
    return spans_from_column(column)


def visible_spans(column: list[GroundedSpan], window, min_score: float) -> list[GroundedSpan]:
    """Spans above ``min_score`` with their boxes projected into ``window`` (under 20 % visible: dropped).

    The containment filter runs after this, as in the original loader (threshold, crop, then
    containment): an expression whose container was cropped away is kept.
    """
    visible = []
    for span in column:
        projected = window.project(span.box) if span.score >= min_score else None
        if projected is not None and projected.is_valid():
            visible.append(replace(span, box=projected))
    return visible


def form_text(row: dict, window, config: ExampleConfig, rng: random.Random) -> str:
    """The training text of a row: grounded (with location tokens) or the plain caption."""
    caption = row["caption"]
    if not isinstance(caption, str):
        raise SkipRow(f"no caption: got {caption!r}")
    if (problem := tag_character_problem(caption)) is not None:
        raise SkipRow(f"caption holds a tag character: caption {problem}")
    typed = checked_spans(row.get(config.spans_column), caption)
    if rng.random() >= config.p_grounded:
        return caption
    kept = select_grounding_spans(visible_spans(typed, window, config.min_score))
    spans = [(start, end, [s.box for s in group]) for (start, end), group in group_by_span(kept).items()]
    if not spans:  # nothing survived threshold and crop: the caption is still a plain example
        return caption
    try:
        return render_grounded_caption(caption, spans, config.location_grid)
    except ValueError as err:  # e.g. a span without a letter or digit: the row, not the run, fails
        raise SkipRow(f"bad span: {err}") from err


def encode_text(
    tokenizer, text: str, num_slots: int, max_length: int, add_eos: bool = True
) -> tuple[list[int], list[int]]:
    """``(input_ids, image_embeds_position_mask)`` as Kosmos2Processor builds them, plus ``</s>``.

    The processor tokenizes ``<image>`` x (slots + 1) ``</image>`` text, then overwrites the slots
    with ids ``unk + 1 ..``; doing the same keeps ids identical to the processor's.
    """
    first_slot = tokenizer.unk_token_id + 1
    prefix = "<image>" * (num_slots + 1) + "</image>"
    ids = tokenizer(prefix + text, add_special_tokens=True).input_ids  # <s> prefix text </s>
    if ids[-1] == tokenizer.eos_token_id:
        ids.pop()  # the processor removes </s> unless asked for it; a generation prompt must not end there
    if add_eos:
        ids.append(tokenizer.eos_token_id)
    ids[2 : 2 + num_slots] = range(first_slot, first_slot + num_slots)
    if len(ids) > max_length:
        ids = [*ids[: max_length - 1], tokenizer.eos_token_id] if add_eos else ids[:max_length]
    mask = [0, 0] + [1] * num_slots + [0] * (len(ids) - num_slots - 2)
    return ids, mask


def make_labels(input_ids: list[int], num_slots: int) -> list[int]:
    """Labels: -100 on ``<s> <image>``, the slots and ``</image>``; the ids everywhere after."""
    prompt = num_slots + 3
    return [IGNORE_INDEX] * prompt + list(input_ids[prompt:])


def make_example(row: dict, processor, config: ExampleConfig, num_slots: int, rng: random.Random) -> Example:
    """The example of one shard row; raises SkipRow when the row cannot be used."""
    data = row.get("image")
    if not data:
        raise SkipRow("row has no image bytes")
    try:
        image = decode_image(data)
    except ValueError as err:
        raise SkipRow(str(err)) from err
    window = window_for(config.image_mode, image.width, image.height)
    text = form_text(row, window, config, rng)
    image_processor = processor.image_processor
    size = int(image_processor.crop_size["height"])
    pixels = to_pixel_values(
        render(image, window, size), image_processor.image_mean, image_processor.image_std
    )
    ids, mask = encode_text(processor.tokenizer, text, num_slots, config.max_length)
    return Example(pixels, ids, mask, make_labels(ids, num_slots))
