"""`grit audit`: the build's text and grounding stages against Flickr30k Entities' human boxes.

The reference checks use a stub detector that returns the human boxes (or the same boxes moved off
themselves) for the chunks it is given: it is the reference the figures are computed against, not
an imitation of a detector. The real stages run around it (spaCy, the fetch stage's decode), and
the tiny random Grounding DINO runs through the command itself.
"""

from __future__ import annotations

import json

import pytest
from benchmark_data import write_flickr30k
from PIL import Image

from grit_pipeline.audit import audit, phrase_of
from grit_pipeline.cli import main
from grit_pipeline.commands.audit import build_image_loader
from grit_pipeline.evalsets.flickr30k import read_split
from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig, GroundingRequest, load_detector
from grit_pipeline.grounding.base import GroundingResult, ScoredBox
from grit_pipeline.locations import Box
from grit_pipeline.text import TextConfig, TextStage

VAL_HUMAN_BOXES = 9  # 1001: man 1, shirt 1, dog 2; person 1, dog 2 (second sentence); 1002: cat 1, box 1
VAL_BOXED_PHRASES = 7


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return write_flickr30k(tmp_path_factory.mktemp("flickr30k_entities"))


class HumanBoxes:
    """The reference: for each chunk, the boxes of the human phrase it overlaps most, score 0.9."""

    def __init__(self, sentences, shift: bool = False):
        self._phrases = {s.text: s.phrases for s in sentences}
        self._shift = shift

    def _box(self, box: Box) -> Box:
        if not self._shift:
            return box
        width, height = box.x_max - box.x_min, box.y_max - box.y_min  # moved by its own size: IoU 0
        return Box(box.x_min + width, box.y_min + height, box.x_max + width, box.y_max + height)

    def ground(self, requests: list[GroundingRequest]) -> list[GroundingResult]:
        results = []
        for request in requests:
            phrases = self._phrases[request.caption]
            per_span = []
            for span in request.spans:
                phrase = phrase_of(span, phrases)
                boxes = phrase.boxes if phrase else ()
                per_span.append(tuple(ScoredBox(self._box(b), 0.9) for b in boxes))
            results.append(GroundingResult(tuple(per_span)))
        return results


def _audit(flickr, nlp, detector, thresholds=(0.5, 0.95)):
    sentences = read_split(flickr, "val")
    config = DetectorConfig(model=TINY_DETECTOR, box_threshold=min(thresholds))
    return audit(
        sentences,
        TextStage(TextConfig(), nlp=nlp),
        detector(sentences),
        config,
        build_image_loader(),
        thresholds,
    )


def test_human_boxes_score_precision_and_recall_one(flickr, nlp):
    report = _audit(flickr, nlp, HumanBoxes)
    assert (
        report["human_boxes"] == VAL_HUMAN_BOXES and report["human_phrases_with_boxes"] == VAL_BOXED_PHRASES
    )
    at_half, at_top = report["boxes"]
    assert at_half["precision"]["value"] == 1.0 and at_half["recall"]["value"] == 1.0
    assert at_half["precision"]["hits"] == at_half["boxes"] - at_half["unjudged"] == VAL_HUMAN_BOXES
    assert at_top["boxes"] == 0 and at_top["recall"]["value"] == 0.0  # 0.9 is not above 0.95
    # every human phrase of the fixture is one of spaCy's noun chunks, character for character
    assert report["text_stage_phrase_recall"]["chunk_exact"]["value"] == 1.0
    low, high = at_half["precision"]["ci95"]
    assert low < 1.0 == high  # Wilson: 9 of 9 is not certainty


def test_shifted_boxes_score_precision_zero(flickr, nlp):
    at_half, _ = _audit(flickr, nlp, lambda s: HumanBoxes(s, shift=True))["boxes"]
    assert at_half["precision"] == {"value": 0.0, "hits": 0, "total": VAL_HUMAN_BOXES, "ci95": [0.0, 0.2991]}
    assert at_half["recall"]["hits"] == 0


def test_the_sweep_gives_what_a_build_at_each_threshold_gives(flickr, nlp):
    """Filtering the lowest threshold's boxes equals running the detector at the higher threshold."""
    sentences = read_split(flickr, "val")
    stage, images = TextStage(TextConfig(), nlp=nlp), build_image_loader()
    parsed = stage.parse([s.text for s in sentences])
    requests = [
        GroundingRequest(images(s), p.caption, p.noun_chunks)
        for s, p in zip(sentences, parsed)
        if not p.reject_reason
    ]
    direct = load_detector(DetectorConfig(model=TINY_DETECTOR, box_threshold=0.5)).ground(requests)
    config = DetectorConfig(model=TINY_DETECTOR, box_threshold=0.3)
    swept = audit(sentences, stage, load_detector(config), config, images, (0.3, 0.5))["boxes"]
    assert swept[1]["boxes"] == sum(len(boxes) for r in direct for boxes in r.boxes)
    assert swept[0]["boxes"] >= swept[1]["boxes"]


def test_audit_command_writes_the_table_json_and_curve(flickr, tmp_path, capsys):
    out = tmp_path / "audit"
    args = ["audit", "--data", str(flickr), "--detector", TINY_DETECTOR, "--box-threshold", "0.5"]
    assert main([*args, "--thresholds", "0.3,0.6", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["threshold"] for row in report["boxes"]] == [
        0.3,
        0.5,
        0.6,
    ]  # the build's threshold joins the sweep
    assert report["sentences"] == 4 and report["human_boxes"] == VAL_HUMAN_BOXES
    assert json.loads((out / "audit.json").read_text()) == report
    assert "<- --box-threshold" in (out / "audit.txt").read_text()
    assert Image.open(out / "pr_curve.png").size[0] > 100
    assert main([*args, "--thresholds", "0.3,1.5"]) == 2  # a number out of range: the config's check
    assert "--thresholds must be numbers in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # not a number: argparse's own error
        main([*args, "--thresholds", "0.3,x"])
    assert exc.value.code == 2 and "--thresholds" in capsys.readouterr().err


# One-to-one matching, on hand-made sentences (no detector: the produced boxes are the input).
MAN = Box(0.1, 0.1, 0.4, 0.9)


def one_sentence(text: str, marked: list[tuple[str, int, int]]):
    from grit_pipeline.evalsets.flickr30k import Phrase, Sentence

    phrases = tuple(
        Phrase(pid, ("people",), start, end, text[start:end], (MAN,)) for pid, start, end in marked
    )
    return Sentence("1", "1.jpg", 0, text, phrases)


def test_two_boxes_on_one_human_box_are_one_hit_and_one_miss():
    from grit_pipeline.audit import judge, sweep
    from grit_pipeline.text import CharSpan, ParsedCaption

    sentence = one_sentence("a man walks", [("1", 0, 5)])
    parsed = ParsedCaption("a man walks", noun_chunks=(CharSpan(0, 5),))
    near = Box(0.1, 0.1, 0.4, 0.85)  # IoU 0.94 with the human box: NMS at 0.5 would drop it, 1.0 not
    result = GroundingResult(((ScoredBox(near, 0.7), ScoredBox(MAN, 0.8)),))
    [row] = sweep([judge(sentence, parsed, result)], [0.5])
    assert row["precision"]["hits"] == 1 and row["precision"]["total"] == 2  # 1/2, not 2/2
    assert row["recall"]["hits"] == row["recall"]["total"] == 1
    # Greedy by score: the 0.8 box took the human box, so above 0.75 precision is 1/1.
    [high] = sweep([judge(sentence, parsed, result)], [0.75])
    assert (high["precision"]["hits"], high["precision"]["total"]) == (1, 1)


def test_an_entity_mentioned_twice_with_one_mention_grounded_is_recall_one_half():
    from grit_pipeline.audit import judge, sweep
    from grit_pipeline.text import CharSpan, ParsedCaption

    text = "a man smiles and the man waves"
    sentence = one_sentence(text, [("1", 0, 5), ("1", 17, 24)])  # one entity (EN#1), two mentions
    parsed = ParsedCaption(text, noun_chunks=(CharSpan(0, 5), CharSpan(17, 24)))
    result = GroundingResult(((ScoredBox(MAN, 0.9),), ()))  # only the first mention got its box
    outcome = judge(sentence, parsed, result)
    [row] = sweep([outcome], [0.5])
    assert (row["recall"]["hits"], row["recall"]["total"]) == (1, 2)  # 1/2, not 2/2
    assert (row["precision"]["hits"], row["precision"]["total"]) == (1, 1)
