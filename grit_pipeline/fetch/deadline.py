"""One wall-clock deadline per download attempt, enforced on every socket read and write.

A socket timeout alone bounds each operation, not their sum: a server sending one byte every
half second never trips it. ``DeadlineSocket`` wraps a connected socket (plain or TLS) and sets
the timeout of every read and write to the time left, so connecting, sending the request, the
status line, the headers and the body all end together at the deadline. Two steps come before
the wrapping: name resolution (``getaddrinfo`` takes no timeout; the system resolver's own applies)
and a TLS handshake (each of its reads gets the time left when the connection started).
"""

from __future__ import annotations

import io
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """A point on the ``time.monotonic`` clock."""

    at_s: float
    limit_s: float  # what the deadline stands for, for the error text

    @classmethod
    def after(cls, limit_s: float, cap_at_s: float | None = None) -> Deadline:
        """``limit_s`` from now, or ``cap_at_s`` if that comes first (a row's time over all its attempts)."""
        at_s = time.monotonic() + limit_s
        return cls(at_s if cap_at_s is None else min(at_s, cap_at_s), limit_s)

    def remaining_s(self) -> float:
        """Seconds left; raises ``TimeoutError`` once the deadline has passed."""
        left = self.at_s - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete response within the {self.limit_s:g} s time limit")
        return left


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: Deadline):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(self._deadline.remaining_s())
        return self._sock.recv_into(buffer)


class DeadlineSocket:
    """The part of a socket that ``http.client`` uses after connecting, every call bounded by ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: Deadline):
        self._sock, self._deadline = sock, deadline

    def sendall(self, data) -> None:
        self._sock.settimeout(self._deadline.remaining_s())
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"only binary reading is bounded by the deadline, not mode {mode!r}")
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self) -> None:
        # http.client closes its connection as soon as the headers say "Connection: close", before
        # the body is read through ``makefile``; whoever wrapped the socket closes it when done.
        pass

    def __getattr__(self, name: str):
        return getattr(self._sock, name)
