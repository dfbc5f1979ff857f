"""Reused buffers for the per-image arrays of the fetch stage.

In: a dtype and a number of elements. Out: a flat buffer of that many, taken from a pool for the
length of a ``with`` block and put back after it. Fresh megabyte arrays are allocated by mmap and
cost a page fault per 4 KiB on first write (perf: about 5% of the stage's CPU at web sizes, inside
OpenCV's decode), so the decoded picture and the resampler's intermediate are written into buffers
kept from earlier images; each thread in flight takes a buffer of its own.

>>> import numpy as np
>>> pool = ScratchPool(np.uint8, kept_bytes=1 << 20)
>>> with pool.take(10) as first:
...     first[:] = 7
>>> with pool.take(4) as again:  # the same memory, reused
...     again.size, int(again[0])
(4, 7)
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class ScratchPool:
    """Flat ``dtype`` buffers reused across calls; one larger than ``kept_bytes`` is not kept."""

    def __init__(self, dtype, kept_bytes: int):
        self.dtype = np.dtype(dtype)
        self.kept_values = kept_bytes // self.dtype.itemsize
        self._free: queue.SimpleQueue = queue.SimpleQueue()

    @contextmanager
    def take(self, values: int) -> Iterator[np.ndarray]:
        """A buffer of exactly ``values`` elements (contents left from earlier use) for the block."""
        try:
            buffer = self._free.get_nowait()
        except queue.Empty:
            buffer = np.empty(0, self.dtype)
        if buffer.size < values:
            buffer = np.empty(values, self.dtype)
        try:
            yield buffer[:values]
        finally:
            if buffer.size <= self.kept_values:
                self._free.put(buffer)
