"""Rows waiting for the detector, grouped by processed image shape; and grounding that isolates failures.

``ShapeBuckets`` is what makes a build's boxes independent of which rows share a batch: a batch is
only ever formed from one bucket (one processed shape, so nothing is padded). A bucket leaves as a
batch when it is full, when its oldest item has waited ``max_wait_s``, when more than ``max_held``
items are held in all (the bucket holding the oldest item goes first, which bounds memory), or on
``flush()``. Oldest first, not fullest first: a shape that is rare in the stream then waits as
long as memory allows to fill, while a common shape's partial bucket, which fills again soon, is
not cut short (``benchmarks/batch_fill.py`` measures both; fullest first let a few rare shapes
pin the memory bound and sent common shapes out a few rows at a time).

``BatchTally`` counts what ran: images, batches and distinct shapes (the manifest's batch figures).

``ground_isolated`` grounds a batch and, when that raises, each of its requests alone, so that an
exception caused by one image costs only that image: its slot holds a ``GroundingError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from grit_pipeline.grounding.base import Detector, GroundingRequest, GroundingResult

T = TypeVar("T")


@dataclass(frozen=True)
class GroundingError:
    """Why one request could not be grounded: the exception's type and message."""

    error: str

    @classmethod
    def of(cls, err: BaseException) -> GroundingError:
        return cls(f"{type(err).__name__}: {err}")


class ShapeBuckets(Generic[T]):
    """Items keyed by shape -> batches of one key each, at most ``batch_size`` long."""

    def __init__(
        self,
        batch_size: int,
        max_held: int,
        max_wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if batch_size < 1 or max_held < batch_size:
            raise ValueError(f"need 1 <= batch_size <= max_held, got {batch_size} and {max_held}")
        self._batch_size, self._max_held, self._max_wait_s, self._clock = (
            batch_size,
            max_held,
            max_wait_s,
            clock,
        )
        self._buckets: dict[Hashable, list[T]] = {}
        self._since: dict[Hashable, float] = {}  # when each bucket's oldest item arrived
        self._arrival: dict[Hashable, int] = {}  # the arrival number of each bucket's oldest item
        self._arrived = 0
        self.held = 0

    def add(self, key: Hashable, item: T) -> list[list[T]]:
        """Hold ``item``; returns the batches that are ready to run (often none)."""
        items = self._buckets.setdefault(key, [])
        self._since.setdefault(key, self._clock())
        self._arrival.setdefault(key, self._arrived)
        self._arrived += 1
        items.append(item)
        self.held += 1
        ready = [self._take(key)] if len(items) >= self._batch_size else []
        ready += self._overdue()
        while self.held > self._max_held:
            ready.append(self._take(self._evicted()))
        return ready

    def _evicted(self) -> Hashable:
        """The bucket that leaves early when too much is held: the one holding the oldest item.

        Arrival numbers, not clock readings: the order is the same on every run.
        """
        return min(self._arrival, key=self._arrival.__getitem__)

    def flush(self) -> list[list[T]]:
        """Every bucket as a batch (end of a bundle)."""
        return [self._take(key) for key in list(self._buckets)]

    def _overdue(self) -> list[list[T]]:
        if self._max_wait_s is None:
            return []
        now = self._clock()
        late = [key for key, since in self._since.items() if now - since >= self._max_wait_s]
        return [self._take(key) for key in late]

    def _take(self, key: Hashable) -> list[T]:
        self._since.pop(key)
        self._arrival.pop(key)
        items = self._buckets.pop(key)
        self.held -= len(items)
        return items


class BatchTally:
    """Images, batches and the distinct shapes seen, for the batch figures of a run."""

    def __init__(self):
        self.images = 0
        self.batches = 0
        self.shapes: set[tuple[int, int]] = set()

    def record(self, size: int, shape: tuple[int, int]) -> None:
        self.images += size
        self.batches += 1
        self.shapes.add((int(shape[0]), int(shape[1])))


def batch_figures(images: int, batches: int, shapes: int, batch_size: int) -> dict:
    """The manifest's batch figures: mean batch and its share of the configured size."""
    mean = images / batches if batches else 0.0
    return {
        "images_grounded": images,
        "batches": batches,
        "mean_batch": round(mean, 3),
        "configured_batch_size": batch_size,
        "batch_fill": round(mean / batch_size, 4) if batch_size else 0.0,
        "distinct_shapes": shapes,
    }


def ground_isolated(
    detector: Detector, requests: Sequence[GroundingRequest]
) -> list[GroundingResult | GroundingError]:
    """One result per request; when the batch raises, each request is retried alone and a request
    that raises again gets a ``GroundingError`` instead of ending the caller's job."""
    try:
        return list(detector.ground(requests))
    except Exception as err:  # any failure of one image must not stop the others
        if len(requests) == 1:
            return [GroundingError.of(err)]
    results: list[GroundingResult | GroundingError] = []
    for request in requests:
        results += ground_isolated(detector, [request])
    return results
