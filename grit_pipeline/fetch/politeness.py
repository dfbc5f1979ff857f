"""Per-host politeness: at most N connections at once and R requests per second to one host, and
a pause for the whole host when it answers 429 or 503 with ``Retry-After``.

The state lives in the worker process (one ``HostLimiter`` per setting, shared by every thread and
every ``Fetcher`` of that process), so a cluster of W workers sends up to W times the limit to a
host. The rate is a token bucket (the generic cell-rate algorithm): a burst of up to one second's
worth of requests, then one every 1/R s. Cheap on the hot path: one dict lookup and one short lock
per request; hosts idle for a while are forgotten so memory stays bounded over millions of hosts.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import threading
import time
from collections.abc import Iterator

_FORGET_AFTER_HOSTS = 10_000  # sweep idle hosts once this many are remembered


class _Host:
    __slots__ = ("active", "next_s", "paused_until_s")

    def __init__(self, now_s: float):
        self.active = 0  # connections open now
        self.next_s = now_s  # theoretical arrival time of the next request (GCRA)
        self.paused_until_s = 0.0  # monotonic time the host's Retry-After pause ends


class HostLimiter:
    """``with limiter.slot(host): ...`` waits for a connection slot and the host's rate, then runs."""

    def __init__(self, max_connections: int, requests_per_s: float):
        self.max_connections = max_connections  # 0: no limit
        self.interval_s = 1 / requests_per_s if requests_per_s > 0 else 0.0  # 0: no limit
        self._burst_s = (max(1, math.ceil(requests_per_s)) - 1) * self.interval_s
        self._hosts: dict[str, _Host] = {}
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        if not self.max_connections and not self.interval_s:  # no limits: only a Retry-After pause
            paused = self._hosts.get(host)  # a lock-free read; pause() writes under the lock
            if paused is not None and (wait_s := paused.next_s - time.monotonic()) > 0:
                time.sleep(wait_s)
            yield
            return
        state, start_s = self._acquire(host)
        try:
            if (wait_s := start_s - time.monotonic()) > 0:
                time.sleep(wait_s)
            yield
        finally:
            with self._changed:
                state.active -= 1
                self._changed.notify_all()

    def _acquire(self, host: str) -> tuple[_Host, float]:
        with self._changed:
            now_s = time.monotonic()
            state = self._hosts.get(host)
            if state is None:
                if len(self._hosts) >= _FORGET_AFTER_HOSTS:
                    self._forget_idle(now_s)
                state = self._hosts[host] = _Host(now_s)
            while self.max_connections and state.active >= self.max_connections:
                self._changed.wait()
            state.active += 1
            now_s = time.monotonic()
            start_s = max(now_s, state.next_s - self._burst_s)
            state.next_s = max(state.next_s, now_s) + self.interval_s
            return state, start_s

    def _forget_idle(self, now_s: float) -> None:
        idle = [h for h, s in self._hosts.items() if not s.active and s.next_s <= now_s - self._burst_s]
        for host in idle:
            del self._hosts[host]

    def pause(self, host: str, seconds: float) -> None:
        """No new request to ``host`` starts for ``seconds`` (its ``Retry-After``)."""
        with self._changed:
            now_s = time.monotonic()
            state = self._hosts.setdefault(host, _Host(now_s))
            state.next_s = max(state.next_s, now_s + seconds + self._burst_s)
            state.paused_until_s = max(state.paused_until_s, now_s + seconds)

    def paused_s(self, host: str) -> float:
        """Seconds left of ``host``'s Retry-After pause (0 when it is not paused)."""
        state = self._hosts.get(host)  # a lock-free read of one float
        return max(0.0, state.paused_until_s - time.monotonic()) if state is not None else 0.0


_LIMITERS: dict[tuple[int, float], HostLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def host_limiter(max_connections: int, requests_per_s: float) -> HostLimiter:
    """The process's limiter for these limits (every thread and ``Fetcher`` of the process shares it)."""
    key = (max_connections, requests_per_s)
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = HostLimiter(max_connections, requests_per_s)
        return _LIMITERS[key]


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0.0, when.timestamp() - time.time())
