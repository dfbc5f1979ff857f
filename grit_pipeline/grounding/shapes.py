"""Image size -> the detector's processed (height, width): the processor's sizes, or a few canonical shapes.

Batches are never padded (see ``preprocess``), so a batch holds one processed shape, and how many
shapes a stream of images falls into decides how full batches get. Two mappings:

- ``exact`` (``max_stretch=0``): transformers' Grounding DINO processor sizes (shortest edge 800,
  longest at most 1333 when it shrinks), vectorised here. Nearly every aspect ratio is its own
  shape. Over sizes 16 to 8,000 px its integer rounding changes the aspect by up to 16.7 %
  (6094x16 -> 1333x3), and an image whose short side already equals its target keeps its size,
  so the longest side reaches 1376 (a 1376x16 image: the processor's own rule).
- ``canonical`` (``max_stretch > 0``, 0.03 by default): the image's aspect ratio is snapped to the
  nearest of a fixed set of ratios, in log space. The set holds 1:2, 9:16, 2:3, 3:4, 1:1 and their
  inverses exactly (the common web ratios, which then get the processor's own size, within a
  pixel), with gaps between neighbours subdivided so that no ratio is more than ``max_stretch``
  from one, and steps of the same size beyond 2:1 out to ``longest``:1. Each ratio's shape has
  its shortest side at ``shortest`` or its longest side at ``longest`` (whichever binds first), so
  the longest side never exceeds ``longest``. With 800/1333 and 0.03 there are 25 shapes between
  1:2 and 2:1 and 245 out to 1333:1; over every image size from 16 to 8,000 px per side the
  aspect changes by at most 3.05 % (the stretch plus the shape's own pixel rounding: 5614x19 ->
  1147x4 is the worst) and the longest side is at most 1333 (``tests/test_grounding_shapes.py``
  checks every size).

An image is resized to its shape, so a kept stretch is anisotropic: boxes, normalised to the
image, come back in the image's own frame; what the stretch does to a trained detector's boxes is
measured by ``benchmarks/batch_fill.py --box-shift`` (tiny random weights: mechanics only).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Landscape anchors (their inverses too): ratios that a canonical grid holds exactly.
ANCHOR_RATIOS = (1.0, 4 / 3, 3 / 2, 16 / 9, 2.0)


def processor_shapes(widths, heights, shortest: int, longest: int) -> np.ndarray:
    """``(N, 2)`` (height, width): transformers' ``get_size_with_aspect_ratio``, vectorised.

    Same float64 arithmetic and the same int truncations, so the sizes are identical.
    """
    w = np.asarray(widths, dtype=np.float64)
    h = np.asarray(heights, dtype=np.float64)
    small, large = np.minimum(h, w), np.maximum(h, w)
    capped = large / small * shortest > longest
    raw = np.where(capped, longest * small / large, float(shortest))
    size = np.where(capped, np.round(raw), float(shortest))  # Python's round: half to even, as numpy
    scale = np.where(capped, raw, size)
    out_h = np.where(w < h, np.trunc(scale * h / w), size)
    out_w = np.where(w < h, size, np.trunc(scale * w / h))
    unchanged = ((h <= w) & (h == size)) | ((w <= h) & (w == size))
    out_h, out_w = np.where(unchanged, h, out_h), np.where(unchanged, w, out_w)
    return np.stack([out_h, out_w], axis=-1).astype(np.int64)


def _landscape_shape(ratio: float, shortest: int, longest: int) -> tuple[int, int]:
    """(height, width) of a ratio >= 1: short side ``shortest`` unless the long side would pass ``longest``."""
    if shortest * ratio <= longest:
        return shortest, round(shortest * ratio)
    height = max(1, round(longest / ratio))
    if round(height * ratio) > longest:
        height -= 1
    return height, round(height * ratio)


@dataclass(frozen=True)
class CanonicalShapes:
    """The canonical grid: sorted log ratios (width / height), their shapes, the midpoints between."""

    log_ratios: np.ndarray  # (K,)
    shapes: np.ndarray  # (K, 2) (height, width)
    bounds: np.ndarray  # (K - 1,) a log ratio above bounds[i] maps past point i

    def indices(self, widths, heights) -> np.ndarray:
        """The grid index of each image (nearest log ratio; a tie goes to the lower ratio)."""
        log_ratio = np.log(np.asarray(widths, dtype=np.float64) / np.asarray(heights, dtype=np.float64))
        return np.searchsorted(self.bounds, log_ratio, side="left")

    def lookup(self, widths, heights) -> np.ndarray:
        """``(N, 2)`` (height, width) of each image."""
        return self.shapes[self.indices(widths, heights)]


@lru_cache(maxsize=8)
def canonical_shapes(shortest: int, longest: int, max_stretch: float) -> CanonicalShapes:
    """The grid for a processor's sizes and a stretch bound (cached: built once per process)."""
    if not 0 < max_stretch < 1:
        raise ValueError(f"max_stretch must be in (0, 1), got {max_stretch}")
    step = 2 * math.log1p(max_stretch)  # neighbours this far apart: no ratio more than max_stretch off
    anchors = [math.log(a) for a in ANCHOR_RATIOS]
    points = [0.0]
    for low, high in itertools.pairwise(anchors):
        parts = math.ceil((high - low) / step - 1e-12)
        points += [low + (high - low) * i / parts for i in range(1, parts + 1)]
    far = math.log(longest)  # the ratio at which the short side reaches one pixel
    while points[-1] + step < far:
        points.append(points[-1] + step)
    points.append(far)
    landscape = [_landscape_shape(math.exp(p), shortest, longest) for p in points]
    log_ratios = np.array([-p for p in reversed(points[1:])] + points)
    shapes = np.array([(w, h) for h, w in reversed(landscape[1:])] + landscape, dtype=np.int64)
    return CanonicalShapes(log_ratios, shapes, (log_ratios[1:] + log_ratios[:-1]) / 2)


def target_shapes(widths, heights, shortest: int, longest: int, max_stretch: float) -> np.ndarray:
    """``(N, 2)`` (height, width) of each image: processor sizes (``max_stretch=0``) or canonical."""
    if max_stretch == 0:
        return processor_shapes(widths, heights, shortest, longest)
    return canonical_shapes(shortest, longest, max_stretch).lookup(widths, heights)


def aspect_change(widths, heights, shapes: np.ndarray) -> np.ndarray:
    """How much each image's aspect ratio changes in its shape: ``max(r, 1 / r) - 1``."""
    image = np.asarray(widths, dtype=np.float64) / np.asarray(heights, dtype=np.float64)
    ratio = (shapes[..., 1] / shapes[..., 0]) / image
    return np.maximum(ratio, 1 / ratio) - 1
