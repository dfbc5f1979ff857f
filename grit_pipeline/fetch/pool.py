"""``Fetcher``: downloads in a thread pool, decodes on one thread per core, with bounded work in flight.

In: URLs, bytes already downloaded, or local files, each with a tag. Out: ``(tag, FetchedImage |
FetchFailure)`` pairs as they finish. Download threads (``thread_count``) spend their time waiting
on the network; each puts the bytes it got on a queue that the decode threads, one per core this
process may run on, empty (OpenCV, libjpeg-turbo and the numba kernel release the GIL). A decode
thread that finishes an image takes the next one at once, where a semaphore over decodes run in
the download threads handed each slot to a sleeping thread: on 2 cores with 16 download threads that
left a slot idle 11% of the time and the CPU 20% (535 against 630 web-size JPEGs a second on
loopback, ``benchmarks/fetch.py``'s server).
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grit_pipeline.fetch.config import FetchConfig
from grit_pipeline.fetch.decode import decode_one, img2dataset_module, make_resizer
from grit_pipeline.fetch.download import download_with_retries
from grit_pipeline.fetch.guard import AddressPolicy, build_opener
from grit_pipeline.fetch.results import FetchedImage, FetchError, FetchFailure
from grit_pipeline.schemas.rejects import UNEXPECTED_ERROR, error_text


def download_one(url: str, config: FetchConfig, opener) -> bytes | FetchFailure:
    """The bytes at ``url`` (with retries), or the failure as a value."""
    try:
        return download_with_retries(url, config, opener)
    except FetchError as err:
        return err.failure


def read_one(source, config: FetchConfig) -> bytes | FetchFailure:
    """A local file's bytes (anything with ``read(max_bytes) -> bytes``, e.g. ``inputs.ImageFile``),
    capped by ``config.max_bytes``, or the failure as a value."""
    try:
        return source.read(config.max_bytes)
    except FetchError as err:
        return err.failure


def _decode_loop(work: queue.SimpleQueue, config: FetchConfig, resizer) -> None:
    """A decode thread: ``(future, bytes, original_size)`` items until a None."""
    while (item := work.get()) is not None:
        future, data, original_size = item
        try:
            future.set_result(decode_one(data, config, resizer, original_size))
        except Exception as err:  # handed to the row (``Fetcher._outcome``), never lost
            future.set_exception(err)


def _stop_decoders(work: queue.SimpleQueue, threads: list[threading.Thread]) -> None:
    for _ in threads:
        work.put(None)


@dataclass  # not frozen: it owns threads
class Fetcher:
    """Downloads in a thread pool and decodes on one thread per core (see the module doc), with
    bounded work in flight.

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
        self._decode_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._decoders = [
            threading.Thread(
                target=_decode_loop,
                args=(self._decode_queue, self.config, self._resizer),
                name=f"grit-decode_{i}",
                daemon=True,
            )
            for i in range(max(1, len(os.sched_getaffinity(0))))
        ]
        for thread in self._decoders:
            thread.start()
        # A Fetcher dropped without close() still stops its decode threads (they hold no reference to it).
        self._stop = weakref.finalize(self, _stop_decoders, self._decode_queue, self._decoders)
        self.max_in_flight = self.max_in_flight or 2 * self.config.thread_count

    def submit(self, tag: Any, url: str) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        return self._read_then_decode(tag, download_one, url, self.config, self._opener)

    def submit_bytes(
        self, tag: Any, data: bytes, original_size=None
    ) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """Bytes already downloaded (img2dataset outputs): checked and decoded on the decode threads."""
        future: Future = Future()
        self._decode_queue.put((future, data, original_size))
        return self._track(tag, future)

    def submit_file(self, tag: Any, source) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """A local file (``--image-path-column``): read in the pool, within ``--max-bytes``, then decoded."""
        return self._read_then_decode(tag, read_one, source, self.config)

    def _read_then_decode(
        self, tag: Any, read: Callable, *args
    ) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """``read(*args)`` in the download pool; its bytes then go to the decode threads."""
        future: Future = Future()
        self._pool.submit(self._read, future, read, args)
        return self._track(tag, future)

    def _read(self, future: Future, read: Callable, args: tuple) -> None:
        try:
            data = read(*args)
        except Exception as err:  # handed to the row (``_outcome``), never lost
            future.set_exception(err)
            return
        if isinstance(data, FetchFailure):
            future.set_result(data)
        else:
            self._decode_queue.put((future, data, None))

    @staticmethod
    def _outcome(future: Future) -> FetchedImage | FetchFailure:
        """A finished row's result; an exception nothing expected is that row's failure."""
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
        self._stop()
