"""A real HTTP server on 127.0.0.1 for download tests and benchmarks: images, errors, redirects, delays.

Routes are registered by path; each says what to answer (status, headers, body), how long to wait
first (or which event to wait for), and how many first requests fail with a 500 (to exercise
retries). Requests are counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Route:
    body: bytes = b""
    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "image/jpeg"),)
    delay_s: float = 0.0
    fail_first: int = 0  # this many first requests answer 500
    # Answer only once the test sets this (at most HOLD_MAX_S): a build that must still be running
    # when the test acts stays running however slowly the machine goes, unlike a fixed delay.
    hold_until: threading.Event | None = None


HOLD_MAX_S = 120.0  # a forgotten hold_until ends, so no handler thread waits for ever


@dataclass
class LoopbackServer:
    """``with LoopbackServer() as server: server.add("/a.jpg", Route(...)); server.url("/a.jpg")``."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)

    def __enter__(self) -> LoopbackServer:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def redirect(self, path: str, target: str, status: int = 302) -> str:
        return self.add(path, Route(status=status, headers=(("Location", target),)))


def _make_handler(server: LoopbackServer):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            with lock:
                server.hits[self.path] += 1
                count = server.hits[self.path]
            route = server.routes.get(self.path)
            if route is None:
                return self._answer(404, (("Content-Type", "text/plain"),), b"not found")
            if route.hold_until is not None:
                route.hold_until.wait(HOLD_MAX_S)
            if route.delay_s:
                time.sleep(route.delay_s)
            if count <= route.fail_first:
                return self._answer(500, (("Content-Type", "text/plain"),), b"try again")
            return self._answer(route.status, route.headers, route.body)

        def _answer(self, status, headers, body):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The client may have given up already (timeout tests).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler
