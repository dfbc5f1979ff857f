"""``Fetcher``: downloads and decodes in a thread pool per worker process, with bounded work in flight."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grit_pipeline.fetch.config import FetchConfig
from grit_pipeline.fetch.decode import decode_one, img2dataset_module, make_resizer
from grit_pipeline.fetch.download import download_with_retries
from grit_pipeline.fetch.guard import AddressPolicy, build_opener
from grit_pipeline.fetch.results import FetchedImage, FetchError, FetchFailure
from grit_pipeline.schemas.rejects import UNEXPECTED_ERROR, error_text


def read_one(source, config: FetchConfig, resizer, slots) -> FetchedImage | FetchFailure:
    """Read a local file (anything with ``read(max_bytes) -> bytes``, e.g. ``inputs.ImageFile``),
    capped by ``config.max_bytes``, then check and decode it."""
    try:
        data = source.read(config.max_bytes)
    except FetchError as err:
        return err.failure
    return decode_one(data, config, resizer, slots)


def fetch_one(url: str, config: FetchConfig, opener, resizer, slots) -> FetchedImage | FetchFailure:
    """Download (with retries), check and decode one URL; failures come back as values."""
    try:
        data = download_with_retries(url, config, opener)
    except FetchError as err:
        return err.failure
    return decode_one(data, config, resizer, slots)


@dataclass  # not frozen: it owns a thread pool
class Fetcher:
    """Downloads and decodes in a thread pool (OpenCV releases the GIL), with bounded work in flight.

    ``submit(tag, url)`` (``submit_bytes`` for bytes in hand, ``submit_file`` for a local file) returns the finished
    ``(tag, FetchedImage | FetchFailure)`` pairs that are ready, blocking while too much is in
    flight; ``drain()`` returns the rest.
    """

    config: FetchConfig
    max_in_flight: int = 0  # 0: twice the thread count, as img2dataset's semaphore
    _pending: dict[Future, Any] = field(default_factory=dict, init=False)
    _finished: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, init=False)  # done futures

    def __post_init__(self) -> None:
        policy = AddressPolicy(self.config.allow_private_addresses, self.config.allowed_networks)
        self._opener = build_opener(policy)
        self._resizer = make_resizer(self.config)
        # img2dataset (its X-Robots-Tag check) takes seconds to import: now, not in the first downloads' deadline.
        img2dataset_module("downloader")
        self._pool = ThreadPoolExecutor(self.config.thread_count, thread_name_prefix="grit-fetch")
        self._decode_slots = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0))))
        self.max_in_flight = self.max_in_flight or 2 * self.config.thread_count

    def submit(self, tag: Any, url: str) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        return self._track(
            tag,
            self._pool.submit(fetch_one, url, self.config, self._opener, self._resizer, self._decode_slots),
        )

    def submit_bytes(
        self, tag: Any, data: bytes, original_size=None
    ) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """Bytes already downloaded (img2dataset outputs): checked and decoded in the pool too."""
        return self._track(
            tag,
            self._pool.submit(
                decode_one, data, self.config, self._resizer, self._decode_slots, original_size
            ),
        )

    def submit_file(self, tag: Any, source) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """A local file (``--image-path-column``): read in the pool, within ``--max-bytes``, then decoded."""
        return self._track(
            tag, self._pool.submit(read_one, source, self.config, self._resizer, self._decode_slots)
        )

    @staticmethod
    def _outcome(future: Future) -> FetchedImage | FetchFailure:
        """A finished download's result; an exception nothing expected is that row's failure."""
        try:
            return future.result()
        except Exception as err:  # one URL's surprise must not end the bundle
            return FetchFailure(UNEXPECTED_ERROR, error_text(err))

    def _track(self, tag: Any, future: Future) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """Hands back what has finished, first waiting for one result while too much is in flight.

        Finished futures queue themselves (a done-callback), so a submit costs the same however
        much is in flight (``concurrent.futures.wait`` installs a waiter on every pending future:
        with 32 in flight that held the GIL longer than the downloads it waited for).
        """
        self._pending[future] = tag
        future.add_done_callback(self._finished.put)
        ready = [self._finished.get()] if len(self._pending) >= self.max_in_flight else []
        while True:
            try:
                ready.append(self._finished.get_nowait())
            except queue.Empty:
                return [(self._pending.pop(f), self._outcome(f)) for f in ready]

    def drain(self) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        done = []
        while self._pending:
            future = self._finished.get()
            done.append((self._pending.pop(future), self._outcome(future)))
        return done

    def fetch_all(self, items: Iterable[tuple[Any, str]]) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """Everything at once (tests, benchmarks): results in completion order."""
        results = []
        for tag, url in items:
            results += self.submit(tag, url)
        return results + self.drain()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
