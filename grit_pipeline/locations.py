"""Boxes <-> Kosmos-2 location tokens, and the grounded-caption text format.

The image is cut into P x P cells (P = 32 in Kosmos-2, so 1,024 location tokens). A box becomes
the cell of its top-left corner and the cell of its bottom-right corner, indexed row-major
(``index = x_cell + y_cell * P``), written ``<patch_index_NNNN>``. See docs/grit.md section 3.

>>> box_to_cells(Box(0.39, 0.05, 0.98, 0.82))
(44, 863)
>>> cells_to_box(44, 863)
Box(x_min=0.390625, y_min=0.046875, x_max=0.984375, y_max=0.828125)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

from grit_pipeline.markup import tag_character_problem
from grit_pipeline.schemas.shard import Box  # the box type is the schema's; re-exported here

NUM_PATCHES_PER_SIDE = 32  # Kosmos-2's P: 32 x 32 = 1,024 location tokens in the released vocabulary

GROUNDING = "<grounding>"
PHRASE_OPEN, PHRASE_CLOSE = "<phrase>", "</phrase>"
OBJECT_OPEN, OBJECT_CLOSE = "<object>", "</object>"
DELIMITER = "</delimiter_of_multi_objects/>"
# The original training code clamps the lower-right corner just below 1.0 so x2 = 1 stays in the last cell.
_LOWER_RIGHT_CLAMP = 0.99999


def patch_token(index: int) -> str:
    """``<patch_index_NNNN>`` for a cell index (4 digits, as in the released vocabulary)."""
    return f"<patch_index_{index:04d}>"


def _cell(value: float, num_patches: int) -> int:
    if not math.isfinite(value):
        raise ValueError(f"box coordinate must be a finite number, got {value!r}")
    return min(max(math.floor(value * num_patches), 0), num_patches - 1)


def box_to_cells(box: Box | Sequence[float], num_patches: int = NUM_PATCHES_PER_SIDE) -> tuple[int, int]:
    """The (upper-left, lower-right) cell indices of a normalised box.

    The original Kosmos-2 formula: ``floor(max(x1, 0) * P)`` for the upper-left corner and
    ``floor(min(x2, 0.99999) * P)`` for the lower-right one, both clamped into the grid, so
    degenerate or out-of-range boxes give valid cells instead of raising.
    """
    x1, y1, x2, y2 = box.as_tuple() if isinstance(box, Box) else box
    ul = _cell(max(x1, 0.0), num_patches) + _cell(max(y1, 0.0), num_patches) * num_patches
    lr = (
        _cell(min(x2, _LOWER_RIGHT_CLAMP), num_patches)
        + _cell(min(y2, _LOWER_RIGHT_CLAMP), num_patches) * num_patches
    )
    return ul, lr


def cells_to_box(ul_index: int, lr_index: int, num_patches: int = NUM_PATCHES_PER_SIDE) -> Box:
    """The box two cell indices stand for: cell edges when the cells share a row or column, else centres."""
    cell = 1.0 / num_patches
    ux, uy = ul_index % num_patches, ul_index // num_patches
    lx, ly = lr_index % num_patches, lr_index // num_patches
    if ux == lx or uy == ly:
        return Box(ux * cell, uy * cell, (lx + 1) * cell, (ly + 1) * cell)
    return Box((ux + 0.5) * cell, (uy + 0.5) * cell, (lx + 0.5) * cell, (ly + 0.5) * cell)


def box_to_tokens(box: Box | Sequence[float], num_patches: int = NUM_PATCHES_PER_SIDE) -> str:
    """``<patch_index_UL><patch_index_LR>`` for a box."""
    ul, lr = box_to_cells(box, num_patches)
    return patch_token(ul) + patch_token(lr)


def _is_edge_character(char: str) -> bool:
    """Whitespace, or an invisible format character (Unicode category Cf: ZWJ, ZWSP, bidi marks, BOM)."""
    return char.isspace() or unicodedata.category(char) == "Cf"


def strip_offsets(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` moved inwards past the whitespace and format characters at its edges.

    The one rule for spans and phrases: they never start or end with whitespace, nor with an
    invisible format character (Unicode category Cf): a lone zero-width joiner left over from an
    emoji sequence, or a bidi mark whose pair would otherwise be split by a ``<phrase>`` tag, stays
    outside the phrase. As transformers' ``_cleanup_spaces`` for whitespace, a range holding nothing
    else comes back with ``end < start``.

    >>> strip_offsets("  a dog  on grass", 0, 9)
    (2, 7)
    >>> strip_offsets("\u200fa dog\u200e on grass", 0, 7)
    (1, 6)
    """
    first, last = start, end
    while first < end and _is_edge_character(text[first]):
        first += 1
    while last > first and _is_edge_character(text[last - 1]):
        last -= 1
    if first == end:  # nothing but edge characters: transformers' arithmetic, end < start
        return end, start
    return first, last


def has_word_character(text: str) -> bool:
    """True when ``text`` holds a letter or a digit (Unicode categories L* and N*): what a phrase needs."""
    return any(unicodedata.category(char)[0] in "LN" for char in text)


_BIDI_OPENERS = {"\u202a": "\u202c", "\u202b": "\u202c", "\u202d": "\u202c", "\u202e": "\u202c"}
_BIDI_OPENERS.update({"\u2066": "\u2069", "\u2067": "\u2069", "\u2068": "\u2069"})
_BIDI_CLOSERS = frozenset(_BIDI_OPENERS.values())


def _unmatched_bidi(text: str) -> list[int]:
    """Positions in ``text`` of bidi controls whose pair is not inside ``text``."""
    stack: list[tuple[str, int]] = []
    unmatched = []
    for i, char in enumerate(text):
        if char in _BIDI_OPENERS:
            stack.append((_BIDI_OPENERS[char], i))
        elif char in _BIDI_CLOSERS:
            if stack and stack[-1][0] == char:
                stack.pop()
            else:
                unmatched.append(i)
    return sorted(unmatched + [i for _, i in stack])


def bidi_trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` cut to its longest part that splits no bidi pair, edges then stripped.

    >>> bidi_trimmed("a \u2067big dog\u2069 on", 0, 10)
    (3, 10)
    >>> bidi_trimmed("\u202bthe dog\u202c runs", 0, 14)
    (1, 8)
    """
    start, end = strip_offsets(text, start, end)  # edge marks first: stripping one can unpair another
    cuts = [start + i for i in _unmatched_bidi(text[start:end])]
    if not cuts:
        return start, end
    bounds = [start - 1, *cuts, end]
    pieces = [(bounds[i] + 1, bounds[i + 1]) for i in range(len(bounds) - 1)]
    best = max(pieces, key=lambda piece: sum(has_word_character(c) for c in text[piece[0] : piece[1]]))
    return strip_offsets(text, *best)


def bidi_balanced(text: str) -> bool:
    """True when every bidi embedding, override or isolate opened in ``text`` is closed in it and
    nothing is closed that it did not open: a phrase cut from it leaves no pair split by a tag.

    >>> bidi_balanced("\u202bthe dog\u202c"), bidi_balanced("the dog\u202c runs")
    (True, False)
    """
    return not _unmatched_bidi(text)


def phrase_problem(text: str) -> str | None:
    """Why ``text`` (a span's text, edges stripped) cannot be a phrase, or None."""
    if not has_word_character(text):
        return "holds no letter or digit"
    if not bidi_balanced(text):
        return "splits a bidi embedding or isolate pair (its other half lies outside the span)"
    return None


def render_grounded_caption(
    caption: str,
    spans: Sequence[tuple[int, int, Sequence[Box | Sequence[float]]]],
    num_patches: int = NUM_PATCHES_PER_SIDE,
) -> str:
    """Kosmos-2 grounded text: each span's caption text in ``<phrase>`` tags followed by its boxes.

    ``spans`` holds ``(start, end, boxes)`` with character offsets into ``caption``; spans without
    boxes are left as plain text. Whitespace at a span's edges (possible in GRIT-20M rows) is left
    outside its ``<phrase>`` tags, so a phrase never starts or ends with whitespace (nor with a format
    character, see ``strip_offsets``). Raises ValueError on overlapping or out-of-range spans, on
    spans without a letter or digit or splitting a bidi pair, and on captions holding ``<`` or ``>`` or a character that NFKC
    turns into one (``markup``), which the Kosmos-2 format cannot carry.

    >>> render_grounded_caption("a dog on grass", [(0, 5, [(0.1, 0.2, 0.5, 0.9)])])
    '<grounding><phrase>a dog</phrase><object><patch_index_0195><patch_index_0912></object> on grass'
    """
    if (problem := tag_character_problem(caption)) is not None:
        raise ValueError(f"caption {problem}: {caption[:200]!r}")
    grounded = sorted(((s, e, b) for s, e, b in spans if len(b) > 0), key=lambda item: (item[0], item[1]))
    parts, cursor = [GROUNDING], 0
    for start, end, boxes in grounded:
        if not 0 <= start < end <= len(caption):
            raise ValueError(
                f"span ({start}, {end}) is empty or outside a caption of {len(caption)} characters"
            )
        if start < cursor:
            raise ValueError(f"span ({start}, {end}) overlaps the span before it (which ends at {cursor})")
        phrase_start, phrase_end = strip_offsets(caption, start, end)
        if (problem := phrase_problem(caption[phrase_start:phrase_end])) is not None:
            raise ValueError(f"span ({start}, {end}) {caption[start:end]!r} {problem}: it cannot be a phrase")
        objects = DELIMITER.join(box_to_tokens(box, num_patches) for box in boxes)
        parts += [caption[cursor:phrase_start], PHRASE_OPEN, caption[phrase_start:phrase_end], PHRASE_CLOSE]
        parts += [OBJECT_OPEN, objects, OBJECT_CLOSE, caption[phrase_end:end]]
        cursor = end
    parts.append(caption[cursor:])
    return "".join(parts)


# The same grammar as transformers' kosmos2 `extract_entities_with_patch_indices`: an optional
# <phrase> (no '<' inside) followed by one <object> holding delimiter-joined patch-index pairs.
_ENTITY = re.compile(
    r"(?:(<phrase>([^<]+)</phrase>))?<object>((?:<patch_index_\d+><patch_index_\d+>"
    r"</delimiter_of_multi_objects/>)*<patch_index_\d+><patch_index_\d+>)</object>"
)
_PAIR = re.compile(r"<patch_index_(\d+)><patch_index_(\d+)>")
_TAG = re.compile(r"<.*?>")

Entity = tuple[str, tuple[int, int], list[tuple[float, float, float, float]]]


def _clean_length(text: str) -> int:
    return len(_TAG.sub("", text))


def parse_grounded_caption(text: str, num_patches: int = NUM_PATCHES_PER_SIDE) -> tuple[str, list[Entity]]:
    """Clean text and ``[(phrase, (start, end), [boxes])]`` from Kosmos-2 grounded text.

    Returns exactly what transformers' ``clean_text_and_extract_entities_with_bboxes`` returns:
    tags removed and the text stripped; offsets into that clean text; phrase names stripped;
    ``<object>`` groups without a phrase become one entity per box, named by its tokens.

    >>> parse_grounded_caption("<grounding><phrase>a dog</phrase><object><patch_index_0195><patch_index_0879></object> runs")
    ('a dog runs', [('a dog', (0, 5), [(0.109375, 0.203125, 0.484375, 0.859375)])])
    """
    raw_text = _TAG.sub("", text)
    leading = len(raw_text) - len(raw_text.lstrip())
    entities: list[Entity] = []
    for match in _ENTITY.finditer(text):
        pairs = [(int(a), int(b)) for a, b in _PAIR.findall(match.group(3))]
        boxes = [cells_to_box(ul, lr, num_patches).as_tuple() for ul, lr in pairs]
        if match.group(1):
            name, (start, end) = match.group(2), match.span(2)
            named = [(name, boxes)]
        else:
            start = end = match.start(0)
            named = [(f"<patch_index_{ul}><patch_index_{lr}>", [box]) for (ul, lr), box in zip(pairs, boxes)]
        clean_start, clean_end = _clean_length(text[:start]) - leading, _clean_length(text[:end]) - leading
        for name, name_boxes in named:
            lead, kept_end = strip_offsets(name, 0, len(name))
            span = (clean_start + lead, clean_end - (len(name) - kept_end))
            entities.append((name.strip(), span, name_boxes))
    return raw_text.strip(), entities
