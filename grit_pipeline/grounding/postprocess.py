"""From one image's raw detector outputs to per-span boxes: span scores, clipping, threshold, NMS.

Plain torch (no torchvision: it does not install beside this project's pinned torch). Shared by both
backends, which differ only in how they produce token probabilities and boxes.

Order of operations, per image:
1. span scores: for each (span, query box) the mean of the box's token probabilities over the
   span's tokens (the official ``token_spans`` mode), never labels decoded above a text threshold;
2. boxes clipped to the image, boxes thinner than ``min_box_side`` dropped (IoUs are then those
   of what is actually inside the image);
3. score threshold (strictly above), then class-agnostic NMS over every (span, box) pair of the
   image. Thresholding first only saves work: greedy NMS visits boxes by falling score, so a box
   under the threshold can never suppress one above it, and the survivors are the same as with
   NMS first (the order of docs/grit.md section 1).

No outcome depends on float noise below the score resolution (``SCORE_STEPS``, 1e-4): scores and
IoUs are rounded to it before any comparison (threshold, which span a query box goes to, NMS order,
NMS overlap), every tie is broken by a stable key (the lower span index, then the lower query
index), and the kept scores are the rounded ones. Two runs whose scores differ by float noise
(about 1e-7 between batch sizes) then give the same boxes unless a score straddles a rounding
boundary, which happens with probability about noise / resolution (1e-3 for 1e-7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from grit_pipeline.grounding.base import ScoredBox
from grit_pipeline.grounding.config import SCORE_STEPS
from grit_pipeline.locations import Box


def span_scores(token_probs: torch.Tensor, token_spans: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(num_spans, num_queries)`` mean token probabilities; a span without tokens scores 0.

    ``token_probs`` is ``(num_queries, num_tokens)``: sigmoid of the model's logits.
    """
    num_tokens = token_probs.shape[1]
    weights = torch.zeros(len(token_spans), num_tokens, dtype=token_probs.dtype, device=token_probs.device)
    for row, tokens in enumerate(token_spans):
        if tokens:
            weights[row, list(tokens)] = 1.0 / len(tokens)
    return weights @ token_probs.T


def center_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` (cx, cy, w, h) -> (x_min, y_min, x_max, y_max)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` IoU matrix of ``(N, 4)`` corner boxes."""
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area[:, None] + area[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def steps(values: torch.Tensor) -> np.ndarray:
    """Values in [0, 1] as whole steps of the score resolution (int64), the unit every comparison uses."""
    return np.rint(values.double().cpu().numpy() * SCORE_STEPS).astype(np.int64)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is above ``iou_threshold``
    (torchvision's convention). Scores and IoUs are compared at the score resolution; equal
    scores keep the earlier index first.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    score_steps = steps(scores)
    order = np.lexsort((np.arange(len(score_steps)), -score_steps))  # falling score, then index
    ordered = boxes[torch.from_numpy(order)]
    overlaps = steps(box_iou(ordered)) > round(iou_threshold * SCORE_STEPS)
    alive = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if alive[i]:  # a kept box: suppress every later box it overlaps
            alive[i + 1 :] &= ~overlaps[i, i + 1 :]
    return torch.from_numpy(order[alive])


def select_boxes(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    box_threshold: float,
    nms_iou: float,
    min_box_side: float,
) -> tuple[tuple[ScoredBox, ...], ...]:
    """Per span, the boxes that survive clipping, the threshold and class-agnostic NMS.

    ``scores`` is ``(num_spans, num_queries)``, ``boxes`` ``(num_queries, 4)`` normalised corner
    boxes. Each span's boxes come out by falling score (then query index), scores rounded to the
    score resolution.
    """
    score_steps, boxes = steps(scores.float()), boxes.float().cpu().clamp(0.0, 1.0)
    num_spans = score_steps.shape[0]
    sides = (boxes[:, 2:] - boxes[:, :2]).numpy()
    sizes_ok = (sides >= min_box_side).all(axis=1)
    candidate = (score_steps > round(box_threshold * SCORE_STEPS)) & sizes_ok[None, :]
    if nms_iou < 1.0 and num_spans:
        # The span copies of one query box are the same box (IoU 1), so NMS keeps only the best
        # one: dropping the others now gives the same survivors with far fewer pairs to compare.
        # argmax takes the first maximum: a tie goes to the lower span index.
        best_span = np.where(candidate, score_steps, -1).argmax(axis=0)
        candidate &= np.arange(num_spans)[:, None] == best_span[None, :]
    span_idx, query_idx = candidate.nonzero()  # row-major: by span, then query (the stable key)
    cand_steps = score_steps[span_idx, query_idx]
    keep = nms(boxes[torch.from_numpy(query_idx)], torch.from_numpy(cand_steps / SCORE_STEPS), nms_iou)
    per_span: list[list[ScoredBox]] = [[] for _ in range(num_spans)]
    for k in keep.tolist():
        x_min, y_min, x_max, y_max = boxes[int(query_idx[k])].tolist()
        score = int(cand_steps[k]) / SCORE_STEPS
        per_span[int(span_idx[k])].append(ScoredBox(Box(x_min, y_min, x_max, y_max), score))
    return tuple(tuple(found) for found in per_span)
