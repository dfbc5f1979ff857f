"""Issue 23, hostile input round two: one test per defect (each fails on the code before the fix).

Text, spans and drawing here; the network, image-file, checkpoint, format and commit defects in
``test_hostile_round_two_io.py``.
"""

from __future__ import annotations

import random
import unicodedata

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from shard_factory import default_samples, shard_row, write_shard

from grit_pipeline.cli import main
from grit_pipeline.locations import Box, render_grounded_caption
from grit_pipeline.model.examples import ExampleConfig, SkipRow, form_text
from grit_pipeline.model.images import FULL_WINDOW
from grit_pipeline.model.synth import SynthConfig, write_synth
from grit_pipeline.shards.checks import row_problems
from grit_pipeline.shards.drawing import Phrase, annotate, draw_boxes
from grit_pipeline.text import TextStage

BOX = (0.1, 0.2, 0.5, 0.9)
GROUNDED = ExampleConfig(p_grounded=1.0, min_score=0.0, image_mode="square")


def _reads_as_bracket(code: int) -> bool:
    normalised = unicodedata.normalize("NFKC", chr(code))
    return code not in (0x3C, 0x3E) and ("<" in normalised or ">" in normalised)


# Every code point NFKC turns into a bracket (U+FE64/65, U+FF1C/1E today), found, not listed.
LOOKALIKES = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and _reads_as_bracket(c)]


# --- 1. control tokens smuggled in with look-alike brackets ---------------------------------------


def test_every_nfkc_bracket_lookalike_is_found():
    assert {"\uff1c", "\uff1e", "\ufe64", "\ufe65"} <= set(LOOKALIKES)


@pytest.mark.parametrize("char", LOOKALIKES, ids=[f"U+{ord(c):04X}" for c in LOOKALIKES])
def test_renderer_refuses_lookalike_brackets(char):
    caption = f"a big dog {char}/s{char} on the grass"
    with pytest.raises(ValueError, match="NFKC"):
        render_grounded_caption(caption, [(0, 9, [BOX])])


@pytest.mark.parametrize(
    "caption", ["a big dog \uff1c/s\uff1e on the grass", "\ufe64phrase\ufe65cat\ufe64/phrase\ufe65"]
)
def test_trainer_text_forming_skips_lookalike_brackets(caption):
    row = {"caption": caption, "ref_exps": [[2, 5, *BOX, 0.9]]}
    with pytest.raises(SkipRow, match="tag character"):
        form_text(row, FULL_WINDOW, GROUNDED, random.Random(0))


def test_validate_reports_lookalike_brackets():
    row = shard_row(default_samples(1)[0])  # "a red square next to a blue circle"
    row["caption"] = row["caption"].replace("next", "\uff1c/s\uff1e")  # same length: spans stay valid
    row["grounded_caption"] = row["grounded_caption"].replace("next", "\uff1c/s\uff1e")
    problems = row_problems(row, check_grounded_caption=True)
    assert any("U+FF1C" in p and "NFKC" in p for p in problems), problems


def test_grit_validate_command_fails_on_lookalike_brackets(tmp_path, capsys):
    rows = [shard_row(s) for s in default_samples(2)]
    for column in ("caption", "grounded_caption"):
        rows[1][column] = rows[1][column].replace("on a", "\ufe64\ufe65a")
    shard = write_shard(str(tmp_path / "lookalike.parquet"), rows)
    assert main(["validate", shard, "--quiet"]) == 1  # invalid shards: exit 1
    out = capsys.readouterr()
    assert "U+FE64" in out.out + out.err and rows[1]["key"] in out.out + out.err


# --- 5. one bad span in `grit train` ---------------------------------------------------------------


@pytest.mark.parametrize(
    "span",
    [[0.5, 5.5, *BOX, 0.9], [0.0, 5.0000001, *BOX, 0.9]],
    ids=["halves", "almost-whole"],
)
def test_non_integer_spans_are_refused_not_truncated(span):
    row = {"caption": "a cafe on a street", "ref_exps": [span]}
    with pytest.raises(SkipRow, match="bad span"):
        form_text(row, FULL_WINDOW, GROUNDED, random.Random(0))


@pytest.mark.parametrize(
    "span",
    [[0, 999, *BOX, 0.9], [-3, 4, *BOX, 0.9], [9, 2, *BOX, 0.9], [0, 4]],
    ids=["past-end", "negative", "inverted", "two-numbers"],
)
def test_bad_spans_skip_the_row_whatever_the_draw(span):
    row = {"caption": "a cafe on a street", "ref_exps": [span]}
    plain = ExampleConfig(p_grounded=0.0, image_mode="square")  # even when the row would be plain text
    for config in (GROUNDED, plain):
        with pytest.raises(SkipRow, match="bad span"):
            form_text(row, FULL_WINDOW, config, random.Random(0))


def test_grit_train_skips_a_row_with_a_bad_span_and_names_it(tmp_path, capsys, caplog):
    torch.set_num_threads(1)
    corpus = tmp_path / "synth"
    write_synth(str(corpus), 8, seed=3, config=SynthConfig(image_size=32))
    shard = next(corpus.glob("*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    bad_key = rows[0]["key"]
    rows[0]["ref_exps"] = [[0.0, 9999.0, *BOX, 0.9]]  # a span past the end of the caption
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), shard)
    out = tmp_path / "run"
    code = main(["train", "--data", str(corpus), "--out", str(out), "--max-steps", "2", "--batch-size", "4"])
    assert code == 0
    captured = capsys.readouterr()
    assert "bad span" in captured.out  # counted in the summary of skipped rows
    named = [r.getMessage() for r in caplog.records if "bad span" in r.getMessage()]
    assert named and str(shard) in named[0] and repr(bad_key) in named[0]
    assert (out / "checkpoint-2").is_dir()


# --- 6. inverted box corners --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [Box(0.8, 0.7, 0.2, 0.1), Box(0.5, 0.5, 0.5, 0.5), Box(0.9, 0.1, 0.1, 0.9), Box(-0.5, 1.5, 1.5, -0.5)],
    ids=["inverted", "a-point", "x-inverted", "outside-inverted"],
)
def test_inverted_boxes_are_drawn_not_a_traceback(box):
    image = Image.new("RGB", (64, 48), (128, 128, 128))
    phrase = Phrase("a dog", 0, 5, (box,), (), (255, 0, 0))
    drawn = draw_boxes(image, [phrase], size=64)
    assert drawn.size == (64, 48)
    if box.area or box.x_min != box.x_max:  # a real box leaves red pixels where its corners are
        assert (255, 0, 0) in {drawn.getpixel((x, y)) for x in range(64) for y in range(48)}
    assert annotate(image, [phrase], "a dog").width >= 64  # the benchmark's worst-misses tile


def test_predicted_inverted_box_is_drawn_by_the_normalised_corners():
    image = Image.new("RGB", (100, 100), (128, 128, 128))
    inverted = draw_boxes(image, [Phrase("x", 0, 1, (Box(0.7, 0.6, 0.2, 0.1),), (), (255, 0, 0))], 100)
    ordered = draw_boxes(image, [Phrase("x", 0, 1, (Box(0.2, 0.1, 0.7, 0.6),), (), (255, 0, 0))], 100)
    assert inverted.tobytes() == ordered.tobytes()


# --- 10. a lone ZWJ and bidi marks -------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_stage():
    return TextStage()


def test_a_lone_zwj_never_becomes_a_phrase(text_stage):
    caption = "a man with \u200d a hat"  # spaCy makes the joiner a noun chunk of its own
    parsed = text_stage.parse([caption])[0]
    texts = [span.text(caption) for span in parsed.noun_chunks] + [
        r.span.text(caption) for r in parsed.ref_exps
    ]
    assert texts and all(any(c.isalnum() for c in t) for t in texts), texts
    with pytest.raises(ValueError, match="no letter or digit"):
        render_grounded_caption(caption, [(11, 12, [BOX])])


@pytest.mark.parametrize(
    ("caption", "want"),
    [
        ("\u200fa dog\u200f on grass", "a dog"),  # right-to-left marks at the edges
        ("\u202bthe dog\u202c runs", "the dog"),  # an embedding: both halves stay outside
    ],
)
def test_bidi_marks_stay_outside_phrase_tags(text_stage, caption, want):
    parsed = text_stage.parse([caption])[0]
    chunks = [span.text(caption) for span in parsed.noun_chunks]
    assert want in chunks, chunks
    for span in parsed.noun_chunks:
        text = span.text(caption)
        assert unicodedata.category(text[0]) != "Cf" and unicodedata.category(text[-1]) != "Cf"
        assert text.count("\u202b") == text.count("\u202c")
    start = caption.index(want)
    grounded = render_grounded_caption(caption, [(start, start + len(want), [BOX])])
    inside = grounded.split("<phrase>")[1].split("</phrase>")[0]
    assert inside == want


def test_a_span_splitting_a_bidi_pair_is_refused_by_the_renderer():
    caption = "\u202bthe dog\u202c runs"
    with pytest.raises(ValueError, match="bidi"):
        render_grounded_caption(caption, [(1, 14, [BOX])])  # "the dog\u202c runs": half the pair
