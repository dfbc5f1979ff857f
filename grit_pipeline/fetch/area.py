"""Exact area-average reduction of uint8 images, at any factor, over a fractional extent.

In: an ``(h, w, c)`` uint8 array, the output ``(width, height)`` and the ``(width, height)`` in
source pixels that the picture covers (a reduced-scale JPEG decode pads its last block, so the
picture may end inside the last row or column). Out: a ``(height, width, c)`` uint8 array where each
pixel is the mean of the source area it covers, partial source pixels weighted by the part covered,
rounded to nearest: what OpenCV's ``INTER_AREA`` computes for a whole extent, here also for a
fractional one, and about twice as fast on photos (one pass down the rows, one along them, compiled
by numba; ``benchmarks/fetch.py`` measures the stage).

>>> import numpy as np
>>> area_reduce(np.array([[[0], [10], [20], [30]]], np.uint8), (2, 1)).ravel().tolist()
[5, 25]
>>> area_reduce(np.array([[[0], [10], [20], [30]]], np.uint8), (1, 1), (3.0, 1.0)).ravel().tolist()
[10]
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit


@lru_cache(maxsize=512)  # photos come in few sizes; the tables are read-only
def area_taps(n_src: int, n_out: int, extent: float) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n_out`` outputs along one axis: the first source index and the weights of the
    ``ceil(extent / n_out) + 1`` source pixels from there (the share of each that the output's
    interval ``[o, o + 1) * extent / n_out`` covers, divided by the interval's length).

    >>> start, weights = area_taps(3, 2, 3.0)  # in thirds: 2/3 + 1/3, then 1/3 + 2/3
    >>> start.tolist(), (weights * 3).round().tolist()
    ([0, 1], [[2.0, 1.0, 0.0], [1.0, 2.0, 0.0]])
    """
    if n_out < 1 or not 0 < extent <= n_src or n_out > extent:
        raise ValueError(f"area reduction of {extent} of {n_src} px to {n_out}: not a reduction")
    step = extent / n_out
    lo = np.arange(n_out) * step
    hi = np.arange(1, n_out + 1) * step
    start = np.floor(lo).astype(np.int64)
    index = start[:, None] + np.arange(int(np.ceil(step)) + 1)[None, :]
    covered = np.minimum(hi[:, None], index + 1) - np.maximum(lo[:, None], index)
    covered = np.where(index < n_src, np.clip(covered, 0, None), 0)
    weights = (covered / step).astype(np.float32)
    start.flags.writeable = weights.flags.writeable = False
    return start, weights


def area_reduce(
    rgb: np.ndarray, size: tuple[int, int], extent: tuple[float, float] | None = None
) -> np.ndarray:
    """``rgb`` (``(h, w)`` or ``(h, w, c)`` uint8) reduced to ``size`` (width, height) by exact area
    average over ``extent`` (width, height; default the whole array). Raises ValueError when a
    side would grow."""
    squeeze = rgb.ndim == 2
    src = np.ascontiguousarray(rgb[:, :, None] if squeeze else rgb, dtype=np.uint8)
    height, width = src.shape[:2]
    extent = extent or (width, height)
    x_start, x_weights = area_taps(width, size[0], float(extent[0]))
    y_start, y_weights = area_taps(height, size[1], float(extent[1]))
    out = np.empty((size[1], size[0], src.shape[2]), np.uint8)
    _reduce(src, y_start, y_weights, x_start, x_weights, out)
    return out[:, :, 0] if squeeze else out


def load_kernel() -> None:
    """Load the compiled kernel now (numba's on-disk cache, or a compile of about 2 s on first use),
    so that the first image does not pay for it inside a download's deadline."""
    area_reduce(np.zeros((2, 2, 3), np.uint8), (1, 1))


def _compiled(function):
    """numba's compile, cached on disk (beside this file or in the user's cache folder), or uncached
    where neither is writable (numba refuses ``cache=True`` then, at import)."""
    try:
        return njit(cache=True, fastmath=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(fastmath=True, nogil=True)(function)


@_compiled
def _reduce(src, y_start, y_weights, x_start, x_weights, out):  # pragma: no cover (compiled)
    height, width, channels = src.shape
    rows = src.reshape(height, width * channels)
    x_taps = x_weights.shape[1]
    # One output row's vertical mean of the source rows, zero-padded so every horizontal tap reads.
    line = np.zeros((width + x_taps) * channels, np.float32)
    for oy in range(out.shape[0]):
        line[:] = 0
        for k in range(y_weights.shape[1]):
            weight = y_weights[oy, k]
            y = y_start[oy] + k
            if weight == 0 or y >= height:
                continue
            row = rows[y]
            for i in range(width * channels):
                line[i] += weight * np.float32(row[i])
        for ox in range(out.shape[1]):
            base = x_start[ox] * channels
            if channels == 3:
                r = np.float32(0)
                g = np.float32(0)
                b = np.float32(0)
                for k in range(x_taps):
                    weight = x_weights[ox, k]
                    at = base + 3 * k
                    r += weight * line[at]
                    g += weight * line[at + 1]
                    b += weight * line[at + 2]
                out[oy, ox, 0] = min(max(int(r + 0.5), 0), 255)
                out[oy, ox, 1] = min(max(int(g + 0.5), 0), 255)
                out[oy, ox, 2] = min(max(int(b + 0.5), 0), 255)
            else:
                for c in range(channels):
                    acc = np.float32(0)
                    for k in range(x_taps):
                        acc += x_weights[ox, k] * line[base + channels * k + c]
                    out[oy, ox, c] = min(max(int(acc + 0.5), 0), 255)
