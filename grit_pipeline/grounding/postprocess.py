"""From one image's raw detector outputs to per-span boxes: span scores, clipping, threshold, NMS.

Plain torch (no torchvision: it does not install beside this project's CPU torch). Shared by both
backends, which differ only in how they produce token probabilities and boxes.

Order of operations, per image:
1. span scores: for each (span, query box) the mean of the box's token probabilities over the
   span's tokens (the official ``token_spans`` mode), never labels decoded above a text threshold;
2. boxes clipped to the image, boxes thinner than ``min_box_side`` dropped (IoUs are then those
   of what is actually inside the image);
3. score threshold (strictly above), then class-agnostic NMS over every (span, box) pair of the
   image. Thresholding first only saves work: greedy NMS visits boxes by falling score, so a box
   under the threshold can never suppress one above it, and the survivors are the same as with
   NMS first (the order GRIT_SPEC gives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from grit_pipeline.grounding.base import ScoredBox
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


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS, highest score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is above ``iou_threshold``
    (torchvision's convention). Ties keep the earlier index.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = (box_iou(boxes[order]) > iou_threshold).cpu().numpy()
    alive = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if alive[i]:  # a kept box: suppress every later box it overlaps
            alive[i + 1 :] &= ~overlaps[i, i + 1 :]
    return order[torch.from_numpy(alive.nonzero()[0]).to(order.device)]


def select_boxes(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    box_threshold: float,
    nms_iou: float,
    min_box_side: float,
) -> tuple[tuple[ScoredBox, ...], ...]:
    """Per span, the boxes that survive clipping, the threshold and class-agnostic NMS.

    ``scores`` is ``(num_spans, num_queries)``, ``boxes`` ``(num_queries, 4)`` normalised corner
    boxes. Each span's boxes come out by falling score.
    """
    scores, boxes = scores.float().cpu(), boxes.float().cpu().clamp(0.0, 1.0)
    num_spans = scores.shape[0]
    sizes_ok = ((boxes[:, 2] - boxes[:, 0]) >= min_box_side) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_side)
    candidate = (scores > box_threshold) & sizes_ok[None, :]
    if nms_iou < 1.0:
        # The span copies of one query box are the same box (IoU 1), so NMS keeps only the best
        # one: dropping the others now gives the same survivors with far fewer pairs to compare.
        best_span = scores.masked_fill(~candidate, float("-inf")).argmax(dim=0)
        candidate &= torch.arange(num_spans)[:, None] == best_span[None, :]
    span_idx, query_idx = candidate.nonzero(as_tuple=True)
    cand_scores = scores[span_idx, query_idx]
    keep = nms(boxes[query_idx], cand_scores, nms_iou)
    per_span: list[list[ScoredBox]] = [[] for _ in range(num_spans)]
    for k in keep.tolist():
        x_min, y_min, x_max, y_max = boxes[query_idx[k]].tolist()
        per_span[int(span_idx[k])].append(ScoredBox(Box(x_min, y_min, x_max, y_max), float(cand_scores[k])))
    return tuple(tuple(found) for found in per_span)
