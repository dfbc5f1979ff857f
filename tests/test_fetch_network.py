"""The fetch stage's network edges: address policy for IPv6 forms carrying IPv4, one URL parser,
one deadline per attempt and per row, Retry-After, and per-host politeness.

Servers run on 127.0.0.1 only. The scripted server below answers each path with a function of the
request count, so a test can trickle bytes, answer 429 then 200, or hold requests open. Politeness
is measured on the client side, on the real limiter (``SlotCounter``): what a server counts lags
what the client holds (a handler still running after the client has released its slot), and a
loaded machine widens the lag. Addresses outside loopback are only judged by the policy, never
connected to.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grit_pipeline.fetch import (
    AddressPolicy,
    FetchConfig,
    FetchedImage,
    Fetcher,
    FetchError,
    FetchFailure,
    build_opener,
    download_with_retries,
    is_public_address,
    politeness,
)
from grit_pipeline.fetch.politeness import HostLimiter, retry_after_s
from grit_pipeline.fetch.urls import ParsedUrl, parse_url
from grit_pipeline.testing import jpeg_bytes

LOOPBACK_ONLY = ("127.0.0.1/32",)
IMAGE = jpeg_bytes(64, 48)
TRICKLE_BYTES = 80  # at 0.25 s each: a download the old per-read timeout let run for 20 s
TRICKLE_S = TRICKLE_BYTES * 0.25
HOLD_MAX_S = 5.0  # below the 10 s default timeout: a held request is answered, never timed out
FULL_WIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
Script = Callable[[BaseHTTPRequestHandler, int], None]


class ScriptedServer:
    """A loopback HTTP server: ``add(path, script)``, where ``script(handler, n)`` answers the n-th request."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.starts: dict[str, list[float]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with server._lock:
                    server.starts.setdefault(self.path, []).append(time.monotonic())
                    server.headers.setdefault(self.path, []).append(dict(self.headers))
                    count = len(server.starts[self.path])
                try:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        server.scripts[self.path](self, count)
                finally:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def add(self, path: str, script: Script) -> str:
        self.scripts[path] = script
        return f"http://127.0.0.1:{self._http.server_address[1]}{path}"

    def hits(self, path: str) -> int:
        return len(self.starts.get(path, []))


def answer(status: int = 200, body: bytes = IMAGE, headers: tuple[tuple[str, str], ...] = (), delay_s=0.0):
    def script(handler: BaseHTTPRequestHandler, _count: int) -> None:
        time.sleep(delay_s)
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return script


def in_turn(*scripts: Script) -> Script:
    """The n-th request gets the n-th script (the last one from then on)."""
    return lambda handler, count: scripts[min(count, len(scripts)) - 1](handler, count)


def trickle_body(handler: BaseHTTPRequestHandler, _count: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(TRICKLE_BYTES))
    handler.end_headers()
    handler.wfile.flush()
    for _ in range(TRICKLE_BYTES):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.25)


def trickle_headers(handler: BaseHTTPRequestHandler, _count: int) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(TRICKLE_BYTES):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server():
    with ScriptedServer() as srv:
        yield srv


def fetch(urls: list[str], **options) -> list[FetchedImage | FetchFailure]:
    """The results of ``urls`` in input order, through a real ``Fetcher``."""
    options.setdefault("allowed_networks", LOOPBACK_ONLY)
    options.setdefault("backoff_s", 0.01)
    fetcher = Fetcher(FetchConfig(**options))
    try:
        results = dict(fetcher.fetch_all(enumerate(urls)))
    finally:
        fetcher.close()
    return [results[i] for i in range(len(urls))]


class SlotCounter(HostLimiter):
    """The real limiter, counting on the client side the slots its callers hold, and when each was
    asked for and granted. A slot counts from its grant to its release, so ``most_held`` is never
    more than the limiter let through at once, however the threads are scheduled."""

    def __init__(self, max_connections: int, requests_per_s: float):
        super().__init__(max_connections, requests_per_s)
        self.held = self.most_held = 0
        self.asked_s: list[float] = []
        self.granted_s: list[float] = []
        self.full = threading.Event()  # set once the limit's worth of slots is held at once
        self._count_lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, host: str):
        with self._count_lock:
            self.asked_s.append(time.monotonic())
        with super().slot(host):
            with self._count_lock:
                self.granted_s.append(time.monotonic())
                self.held += 1
                self.most_held = max(self.most_held, self.held)
                if self.held == self.max_connections:
                    self.full.set()
            try:
                yield
            finally:
                with self._count_lock:
                    self.held -= 1


@pytest.fixture
def counted_limiter(monkeypatch):
    """``counted_limiter(connections, rate)``: a fresh ``SlotCounter`` as the process's limiter for those limits."""

    def install(max_connections: int, requests_per_s: float) -> SlotCounter:
        counter = SlotCounter(max_connections, requests_per_s)
        monkeypatch.setitem(politeness._LIMITERS, (max_connections, requests_per_s), counter)
        return counter

    return install


def held_until_full(counter: SlotCounter, delay_s: float) -> Script:
    """Answers once the client has held its limit's worth of slots at once (HOLD_MAX_S at most)."""
    reply = answer(delay_s=delay_s)

    def script(handler: BaseHTTPRequestHandler, count: int) -> None:
        counter.full.wait(HOLD_MAX_S)
        reply(handler, count)

    return script


# --- address policy: IPv6 forms that carry an IPv4 address (judged, never connected to) ---------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254 (cloud metadata)
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8: a public host
        ("64:ff9b:1::808:808", False),  # local-use NAT64: refused whatever it carries
        ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
        ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::169.254.169.254", False),  # IPv4-compatible
        ("::8.8.8.8", False),  # IPv4-compatible, deprecated: refused even for a public IPv4
        ("::ffff:0:a9fe:a9fe", False),  # IPv4-translated
        ("::ffff:0:808:808", False),
        ("::ffff:169.254.169.254", False),  # IPv4-mapped
        ("fec0::1", False),  # site-local
        ("feff::1", False),  # site-local, last block
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("2606:4700:4700::1111", True),
    ],
)
def test_ipv6_carrying_ipv4_is_judged_by_that_ipv4_or_refused(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public
    assert AddressPolicy(allowed_networks=LOOPBACK_ONLY).allows(ipaddress.ip_address(address)) is public


def test_an_allowed_ipv4_network_does_not_open_its_ipv6_spellings():
    policy = AddressPolicy(allowed_networks=LOOPBACK_ONLY)
    assert policy.allows(ipaddress.ip_address("127.0.0.1"))
    for spelling in ("64:ff9b::7f00:1", "2002:7f00:1::1", "::127.0.0.1", "::ffff:0:7f00:1"):
        assert not policy.allows(ipaddress.ip_address(spelling)), spelling


# --- one URL parser ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://example.com/a.jpg", ("http", "example.com", 80, "/a.jpg")),
        ("HTTPS://Example.COM", ("https", "example.com", 443, "/")),
        ("http://user@example.com/x", ("http", "example.com", 80, "/x")),
        ("http://user:p%40ss@example.com:8080/x", ("http", "example.com", 8080, "/x")),
        ("http://a@b@example.com/x", ("http", "example.com", 80, "/x")),  # the last @ ends the user info
        ("http://example.com:/x", ("http", "example.com", 80, "/x")),
        ("http://[::1]:81/x", ("http", "::1", 81, "/x")),
        ("http://[2001:DB8::0:1]/", ("http", "2001:db8::1", 80, "/")),
        ("https://bücher.de/ü.jpg", ("https", "xn--bcher-kva.de", 443, "/%C3%BC.jpg")),
        ("http://example.com/a b.jpg?q=x y#frag", ("http", "example.com", 80, "/a%20b.jpg?q=x%20y")),
        ("http://example.com/a%20b.jpg", ("http", "example.com", 80, "/a%20b.jpg")),
        ("http://example.com?x=1", ("http", "example.com", 80, "/?x=1")),
        (" http://example.com/x ", ("http", "example.com", 80, "/x")),
    ],
)
def test_urls_are_parsed_into_the_host_that_is_connected_to(url, parsed):
    assert parse_url(url) == ParsedUrl(*parsed)


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http:///x.jpg",
        "http://user@/x.jpg",
        "http://example.com:99999/x",  # would wrap to port 34463
        "http://example.com:65536/x",
        "http://example.com:0/x",
        "http://example.com:-1/x",
        "http://example.com:８０/x",  # full-width digits in the port
        "http://１２７.０.０.１/x",  # full-width digits in the host
        "http://example.com:80:80/x",
        "http://%31%32%37.0.0.1/x",
        "http://exa mple.com/x",
        "http://example.com/x\r\nX-Injected: 1",
        "http://example.com/x\n",
        "http://example.com/x\x00.jpg",
        "http://exam\tple.com/x",
        "http://[::1/x",
        "http://[1.2.3.4]/x",
        "http://[fe80::1%25eth0]/x",
        "http://[::1]x/",
        "ftp://example.com/x",
        "javascript:alert(1)",
        "example.com/x.jpg",
        42,
        None,
    ],
)
def test_malformed_urls_are_invalid_url(url):
    with pytest.raises(FetchError) as info:  # parsed only: no name is looked up, nothing is sent
        parse_url(url)
    assert (info.value.failure.reason, info.value.failure.transient) == ("invalid_url", False)


def test_user_info_is_parsed_off_and_never_sent(server):
    url = server.add("/userinfo.jpg", answer())
    [result] = fetch([url.replace("http://", "http://user:secret@")])
    assert isinstance(result, FetchedImage), result
    [headers] = server.headers["/userinfo.jpg"]
    assert headers["Host"] == url.split("/")[2]
    assert "Authorization" not in headers


def test_crlf_nul_and_wrapping_ports_send_nothing(server):
    url = server.add("/never.jpg", answer())
    port = url.split(":")[2].split("/")[0]
    spellings = [
        url + "\r\nX-Injected: 1",
        url.replace("never", "nev\x00er"),
        url.replace(f":{port}/", f":{int(port) + 65536}/"),  # the same port, wrapped
        url.replace(f":{port}/", f":{port.translate(FULL_WIDTH)}/"),
        url.replace("127.0.0.1", "127.0.0.1".translate(FULL_WIDTH)),
        "http://",
        f"http://:{port}/never.jpg",
    ]
    results = fetch(spellings)
    assert [(r.reason, r.transient) for r in results] == [("invalid_url", False)] * len(spellings)
    assert server.hits("/never.jpg") == 0


def test_redirect_to_a_malformed_url_is_a_bad_redirect(server):
    url = server.add("/to-bad-port", answer(302, b"", (("Location", "http://127.0.0.1:99999/x.jpg"),)))
    [failure] = fetch([url])
    assert failure.reason == "bad_redirect" and "99999" in failure.error


# --- one deadline per attempt, one per row -------------------------------------------------------


@pytest.mark.parametrize("script", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_timeout_is_one_deadline_for_a_trickling_server(server, script):
    url = server.add(f"/trickle-{script.__name__}", script)
    [failure] = fetch([url], timeout_s=1.0, retries=0)
    # From the request, not the call: making the first Fetcher imports img2dataset (seconds when loaded).
    elapsed_s = time.monotonic() - server.starts[f"/trickle-{script.__name__}"][0]
    assert (failure.reason, failure.transient) == ("timeout", True), failure
    # Half the trickle: the deadline ended it, not the last byte (a margin a loaded machine keeps).
    assert elapsed_s < TRICKLE_S / 2, f"held for {elapsed_s:.1f} s at a 1 s timeout"


def test_a_row_spends_at_most_total_timeout_over_its_retries(server):
    url = server.add("/trickle-retried", trickle_body)
    [failure] = fetch([url], timeout_s=0.6, retries=5, total_timeout_s=1.5)
    elapsed_s = time.monotonic() - server.starts["/trickle-retried"][0]
    assert failure.reason == "timeout"
    assert elapsed_s < TRICKLE_S / 2, f"{elapsed_s:.1f} s over retries with a 1.5 s total"
    # Each attempt lasts until its deadline, so 1.5 s hold 3 of them whatever the scheduler does
    # (the clock bound above cannot tell 1.5 s from the 3.6 s of six attempts on a loaded machine).
    assert server.hits("/trickle-retried") <= 3


def test_total_timeout_shorter_than_one_attempt_is_refused():
    with pytest.raises(ValueError, match="--total-timeout"):
        FetchConfig(timeout_s=10, total_timeout_s=5)


# --- Retry-After ---------------------------------------------------------------------------------


def http_date(at_s: float) -> str:
    """``at_s`` (``time.time``) as an HTTP date: whole seconds, the fraction dropped."""
    return email.utils.formatdate(at_s, usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (429, lambda now_s: ("1", now_s + 1)),
        (503, lambda now_s: (http_date(now_s + 2), math.floor(now_s + 2))),
    ],
    ids=["429-seconds", "503-http-date"],
)
def test_retry_after_is_waited_for(server, status, retry_after):
    """The retry comes no sooner than the server said, measured from when it said it: a slow
    client may come later, never sooner (an HTTP date leaves it less to wait the later it reads it)."""
    path = f"/retry-after-{status}"
    not_before_s: list[float] = []  # on the monotonic clock

    def busy(handler: BaseHTTPRequestHandler, count: int) -> None:
        now_mono_s = time.monotonic()  # first: a pause before the wall clock is read only loosens the bound
        value, until_s = retry_after(time.time())
        not_before_s.append(now_mono_s + until_s - time.time())
        answer(status, b"", (("Retry-After", value),))(handler, count)

    url = server.add(path, in_turn(busy, answer()))
    [result] = fetch([url], retries=2)  # backoff 0.01 s: only Retry-After makes it wait
    assert isinstance(result, FetchedImage), result
    _, second = server.starts[path]
    assert second >= not_before_s[0] - 0.01, f"retried {not_before_s[0] - second:.2f} s too soon"


def test_retry_after_longer_than_the_cap_is_not_waited_for(server):
    url = server.add("/retry-after-long", answer(429, b"", (("Retry-After", "3600"),)))
    config = FetchConfig(retries=3, max_retry_after_s=1.0, backoff_s=0.01, allowed_networks=LOOPBACK_ONLY)
    waits: list[float] = []  # the row's waits, recorded instead of slept: none, whatever the clock says
    with pytest.raises(FetchError) as info:
        download_with_retries(url, config, build_opener(AddressPolicy(False, LOOPBACK_ONLY)), waits.append)
    failure = info.value.failure
    assert (failure.reason, failure.transient) == ("http_429", True)  # for --retry-rejects later
    assert "Retry-After 3600" in failure.error
    assert server.hits("/retry-after-long") == 1 and waits == []


def test_retry_after_beyond_the_rows_total_time_is_not_waited_for(server):
    url = server.add("/retry-after-budget", answer(503, b"", (("Retry-After", "2"),)))
    [failure] = fetch([url], retries=3, timeout_s=0.5, total_timeout_s=1.0)
    assert failure.reason == "http_503"
    assert server.hits("/retry-after-budget") == 1


@pytest.mark.parametrize("limits", [{}, {"max_host_connections": 0, "max_host_requests_per_s": 0}])
def test_retry_after_pauses_the_whole_host(server, limits):
    busy = server.add(f"/busy-{len(limits)}", answer(429, b"", (("Retry-After", "1"),)))
    other = server.add(f"/other-on-same-host-{len(limits)}.jpg", answer())
    results = fetch([busy, other], retries=0, thread_count=1, **limits)
    assert results[0].reason == "http_429" and isinstance(results[1], FetchedImage)
    starts = server.starts[f"/busy-{len(limits)}"] + server.starts[f"/other-on-same-host-{len(limits)}.jpg"]
    assert starts[1] - starts[0] >= 0.9


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("7", 7.0), (" 0 ", 0.0), ("-1", None), ("soon", None), ("1.5", None)],
)
def test_retry_after_header_values(header, seconds):
    assert retry_after_s(header) == seconds


def test_retry_after_as_an_http_date():
    before_s = time.time()
    wait_s = retry_after_s(http_date(before_s + 10))
    assert math.floor(before_s + 10) - time.time() <= wait_s <= 10
    assert retry_after_s(http_date(time.time() - 10)) == 0.0


# --- per-host politeness (state per worker process) ---------------------------------------------


# The server holds its first answers until the client holds the limit's worth of slots at once, so
# the limit is reached for certain; the count is the client's, so it is never more than the limiter
# allowed (a server-side count lags: a handler can still be running after its slot was released).


def test_connections_per_host_are_limited(server, counted_limiter):
    counter = counted_limiter(2, 0)
    urls = [server.add(f"/held/{i}.jpg", held_until_full(counter, delay_s=0.3)) for i in range(8)]
    results = fetch(urls, thread_count=8, max_host_connections=2, max_host_requests_per_s=0)
    assert all(isinstance(r, FetchedImage) for r in results)
    assert counter.most_held == 2, f"{counter.most_held} connections at once, limit 2"


def test_default_limits_hold_many_threads_to_six_connections(server, counted_limiter):
    assert FetchConfig.max_host_connections == 6
    counter = counted_limiter(FetchConfig.max_host_connections, FetchConfig.max_host_requests_per_s)
    urls = [server.add(f"/held-default/{i}.jpg", held_until_full(counter, delay_s=0.3)) for i in range(12)]
    results = fetch(urls, thread_count=12)
    assert all(isinstance(r, FetchedImage) for r in results)
    assert counter.most_held == 6, f"{counter.most_held} connections at once, limit 6"


def test_requests_per_second_per_host_are_limited(server, counted_limiter):
    rate = 5  # a burst of up to 5 (one second's worth), then one every 0.2 s
    counter = counted_limiter(0, rate)
    urls = [server.add(f"/rated/{i}.jpg", answer()) for i in range(15)]
    results = fetch(urls, thread_count=8, max_host_connections=0, max_host_requests_per_s=rate)
    assert all(isinstance(r, FetchedImage) for r in results)
    # The n-th request let go comes no sooner than (n - 5) / 5 s after the first one asked: the
    # limiter's own schedule, which a slow machine can only make later.
    first_s = min(counter.asked_s)
    granted = [t - first_s for t in sorted(counter.granted_s)]
    early = [(n, round(t, 3)) for n, t in enumerate(granted, 1) if t < (n - rate) / rate - 1e-6]
    assert len(granted) == 15 and not early, f"(n-th request, seconds after the first) too soon: {early}"


def test_idle_hosts_are_forgotten_so_memory_stays_bounded():
    limiter = HostLimiter(max_connections=1, requests_per_s=0)
    for i in range(25_000):
        with limiter.slot(f"host-{i}.example"):  # no connection is made: only the slot is taken
            pass
    assert len(limiter._hosts) <= 10_000
