"""Rows waiting for the detector, grouped by processed image shape; and grounding that isolates failures.

``ShapeBuckets`` is what makes a build's boxes independent of which rows share a batch: a batch is
only ever formed from one bucket (one processed shape, so nothing is padded). A bucket leaves as a
batch when it is full, when its oldest item has waited ``max_wait_s``, when more than ``max_held``
items are held in all (the fullest bucket goes first, which bounds memory), or on ``flush()``.

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

    @property
    def held(self) -> int:
        return sum(len(items) for items in self._buckets.values())

    def add(self, key: Hashable, item: T) -> list[list[T]]:
        """Hold ``item``; returns the batches that are ready to run (often none)."""
        items = self._buckets.setdefault(key, [])
        self._since.setdefault(key, self._clock())
        items.append(item)
        ready = [self._take(key)] if len(items) >= self._batch_size else []
        ready += self._overdue()
        while self.held > self._max_held:
            ready.append(self._take(max(self._buckets, key=lambda k: len(self._buckets[k]))))
        return ready

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
        return self._buckets.pop(key)


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
