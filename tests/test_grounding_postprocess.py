"""Span scores, NMS, threshold, clipping and degenerate boxes, on hand-made boxes and scores."""

import random

import pytest
import torch

from grit_pipeline.grounding.postprocess import box_iou, center_to_corners, nms, select_boxes, span_scores
from grit_pipeline.locations import Box


def reference_select(scores, boxes, box_threshold, nms_iou, min_side):
    """Spec order, written plainly: every (span, box) pair, NMS first, then threshold; scores and
    IoUs compared at 4 decimals, ties by (span, query)."""
    clipped = [Box(*[min(max(v, 0.0), 1.0) for v in b]) for b in boxes.tolist()]
    pairs = [
        (round(float(scores[s, q]) * 10_000), s, q)
        for s in range(scores.shape[0])
        for q in range(scores.shape[1])
        if clipped[q].x_max - clipped[q].x_min >= min_side and clipped[q].y_max - clipped[q].y_min >= min_side
    ]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    kept = []
    for score, s, q in pairs:
        if all(round(clipped[q].iou(clipped[kq]) * 10_000) <= round(nms_iou * 10_000) for _, _, kq in kept):
            kept.append((score, s, q))
    out = [[] for _ in range(scores.shape[0])]
    for score, s, q in kept:
        if score > round(box_threshold * 10_000):
            out[s].append((score / 10_000, clipped[q].as_tuple()))
    return out


def as_plain(selected):
    return [[(sb.score, sb.box.as_tuple()) for sb in span] for span in selected]


def test_span_score_is_the_mean_over_the_span_tokens():
    probs = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.6, 0.0]])  # (queries, tokens)
    scores = span_scores(probs, [(0, 2), (1,), ()])
    expected = torch.tensor([[0.7, 0.4], [0.1, 0.8], [0.0, 0.0]])
    assert torch.allclose(scores, expected)


def test_center_to_corners():
    [corners] = center_to_corners(torch.tensor([[0.5, 0.5, 0.2, 0.4]])).tolist()
    assert corners == pytest.approx([0.4, 0.3, 0.6, 0.7])


def test_box_iou_agrees_with_box_iou_of_locations():
    rng = random.Random(1)
    raw = [sorted(rng.random() for _ in range(2)) for _ in range(12)]
    boxes = [Box(a[0], b[0], a[1], b[1]) for a, b in zip(raw[::2], raw[1::2])]
    matrix = box_iou(torch.tensor([b.as_tuple() for b in boxes], dtype=torch.float64))
    for i, first in enumerate(boxes):
        for j, second in enumerate(boxes):
            assert matrix[i, j].item() == pytest.approx(first.iou(second), abs=1e-9)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = torch.tensor(
        [[0.0, 0.0, 0.5, 0.5], [0.02, 0.0, 0.52, 0.5], [0.6, 0.6, 1.0, 1.0], [0.0, 0.0, 0.5, 0.25]]
    )
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6])
    # box 1 beats box 0 (IoU 0.92); box 3 has IoU 0.48 with box 1: kept at 0.5, dropped at 0.4
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_nms_is_class_agnostic_across_spans():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    scores = torch.tensor([[0.70, 0.9], [0.80, 0.1]])  # span 1 scores box 0 higher than span 0 does
    selected = select_boxes(scores, boxes, box_threshold=0.65, nms_iou=0.5, min_box_side=1e-4)
    assert [[round(sb.score, 2) for sb in span] for span in selected] == [[0.9], [0.8]]
    assert selected[1][0].box == Box(*boxes[0].tolist())


def test_threshold_is_strict_and_boxes_are_clipped():
    boxes = torch.tensor([[-0.2, 0.1, 0.5, 1.3], [0.6, 0.6, 0.9, 0.9]])
    scores = torch.tensor([[0.66, 0.65]])
    [span] = select_boxes(scores, boxes, box_threshold=0.65, nms_iou=0.5, min_box_side=1e-4)
    assert len(span) == 1
    assert span[0].box.as_tuple() == pytest.approx((0.0, 0.1, 0.5, 1.0))
    assert span[0].box.is_valid()


def test_degenerate_and_outside_boxes_are_dropped():
    boxes = torch.tensor(
        [[0.3, 0.3, 0.3, 0.6], [0.2, 0.5, 0.6, 0.5], [1.2, 0.1, 1.5, 0.4], [0.1, 0.1, 0.2, 0.2]]
    )
    scores = torch.full((1, 4), 0.9)
    [span] = select_boxes(scores, boxes, box_threshold=0.5, nms_iou=0.5, min_box_side=1e-4)
    assert [sb.box.as_tuple() for sb in span] == [pytest.approx((0.1, 0.1, 0.2, 0.2))]


@pytest.mark.parametrize("nms_iou", [0.3, 0.5, 0.7, 1.0])
def test_select_boxes_matches_the_plain_reference_on_random_cases(nms_iou):
    generator = torch.Generator().manual_seed(int(nms_iou * 10))
    for _ in range(15):
        num_spans, num_queries = 3, 25
        centre = torch.rand(num_queries, 2, generator=generator) * 1.2 - 0.1
        size = torch.rand(num_queries, 2, generator=generator) * 0.5
        boxes = center_to_corners(torch.cat([centre, size], dim=1))
        scores = torch.rand(num_spans, num_queries, generator=generator)
        got = select_boxes(scores, boxes, box_threshold=0.4, nms_iou=nms_iou, min_box_side=0.01)
        expected = reference_select(scores, boxes, 0.4, nms_iou, 0.01)
        assert as_plain(got) == [[(s, pytest.approx(b)) for s, b in span] for span in expected]


def test_scores_apart_by_float_noise_give_the_same_boxes_whichever_is_larger():
    # Two overlapping boxes that two spans score about equally (0.7 +- 1e-7, the noise seen between
    # batch sizes): whichever way the noise falls, the same box survives NMS and keeps its span.
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.11, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    outcomes = set()
    for noise in (1e-7, -1e-7, 0.0):
        scores = torch.tensor([[0.7 + noise, 0.2, 0.1], [0.2, 0.7 - noise, 0.1]], dtype=torch.float64)
        selected = select_boxes(scores, boxes, box_threshold=0.5, nms_iou=0.5, min_box_side=1e-4)
        outcomes.add(tuple(tuple((sb.score, sb.box.as_tuple()) for sb in span) for span in selected))
    assert len(outcomes) == 1
    [(first, second)] = outcomes
    assert [score for score, _ in first] == [0.7] and second == ()  # box 0 (span 0), score rounded


def test_a_query_box_scored_equally_by_two_spans_goes_to_the_lower_span():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    for noise in (1e-7, -1e-7):
        scores = torch.tensor([[0.8], [0.8 + noise]], dtype=torch.float64)
        selected = select_boxes(scores, boxes, box_threshold=0.5, nms_iou=0.5, min_box_side=1e-4)
        assert [len(span) for span in selected] == [1, 0]


def test_nms_ties_keep_the_earlier_index():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]])
    assert nms(boxes, torch.tensor([0.6, 0.6 + 1e-7], dtype=torch.float64), 0.5).tolist() == [0]
    assert nms(boxes, torch.tensor([0.6 + 1e-7, 0.6], dtype=torch.float64), 0.5).tolist() == [0]
