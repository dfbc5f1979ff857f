"""The one check where text becomes tokens: nothing in a caption may read as a Kosmos-2 tag.

Every Kosmos-2 control token is written between ``<`` and ``>`` (``</s>``, ``<phrase>``,
``<object>``, ``<patch_index_NNNN>``, ``<image>``). The corpus tokenizer normalises NFKC before it
matches them, as the released one (XLM-R's ``nmt_nfkc``) does, so a look-alike bracket such as
``＜`` (U+FF1C) or ``﹤`` (U+FE64) becomes ``<`` inside the tokenizer and ``＜/s＞`` becomes id 2.
A caption is therefore refused when any of its characters is ``<``/``>`` or decomposes (NFKD, a
superset of what NFKC yields: composition never makes a new ``<``) into text holding one. The
renderer (``locations``), ``grit validate`` (``shards.checks``) and the trainer's text forming
(``model.examples``) all call :func:`tag_character_problem`.

>>> tag_character_problem("a big dog ＜/s＞ on the grass")
"holds '＜' (U+FF1C), which reads as '<' after NFKC normalisation; the Kosmos-2 format cannot carry '<' or '>'"
>>> tag_character_problem("a dog on grass") is None
True
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

BRACKETS = ("<", ">")


@lru_cache(maxsize=4096)
def _reads_as_bracket(char: str) -> str | None:
    """The bracket ``char`` becomes under compatibility normalisation, or None."""
    decomposed = unicodedata.normalize("NFKD", char)
    return next((b for b in BRACKETS if b in decomposed), None)


def tag_character(text: str) -> tuple[str, str] | None:
    """``(character, bracket it reads as)`` for the first character of ``text`` that is or becomes
    ``<`` or ``>`` under NFKC, or None."""
    if text.isascii():  # the common case: only the brackets themselves
        return next(((b, b) for b in text if b in BRACKETS), None)
    for char in text:
        if (bracket := _reads_as_bracket(char)) is not None:
            return char, bracket
    return None


def tag_character_problem(text: str) -> str | None:
    """Why ``text`` cannot become Kosmos-2 tokens (a bracket or a look-alike of one), or None."""
    found = tag_character(text)
    if found is None:
        return None
    char, bracket = found
    if char == bracket:
        return f"holds {char!r}; the Kosmos-2 format cannot carry '<' or '>' (they would read as tags)"
    return (
        f"holds {char!r} (U+{ord(char):04X}), which reads as {bracket!r} after NFKC normalisation; "
        "the Kosmos-2 format cannot carry '<' or '>'"
    )
