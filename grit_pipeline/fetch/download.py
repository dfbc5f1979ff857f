"""One URL -> its bytes: parsed by ``urls``, connected through the address ``guard``, polite per
host (``politeness``), bounded by one ``deadline`` per attempt and one per row, capped in size,
checked with img2dataset's X-Robots-Tag test (``is_disallowed``, same directives and user-agent
token), and retried with exponential backoff, or after the server's ``Retry-After``, when transient."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable

from grit_pipeline.fetch.config import TRANSIENT_REASONS, FetchConfig
from grit_pipeline.fetch.deadline import Deadline, DeadlineSocket
from grit_pipeline.fetch.decode import img2dataset_module
from grit_pipeline.fetch.guard import Opener, PrivateAddressError
from grit_pipeline.fetch.politeness import host_limiter, retry_after_s
from grit_pipeline.fetch.results import FetchError
from grit_pipeline.fetch.urls import ParsedUrl, parse_url, resolve_redirect

_USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
_CHUNK_BYTES = 1 << 16
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10  # as urllib and browsers (Chrome allows 20)
MAX_INFORMATIONAL = 8  # 1xx answers (103 Early Hints) skipped before the real one; more is a broken server


class _Response(http.client.HTTPResponse):
    """http.client's response, skipping every informational answer before the final one.

    http.client skips ``100 Continue`` only: a ``103 Early Hints`` (sent by CDNs before a 200) would
    come back as the response. Like browsers, its headers are read and dropped (``101`` is not
    informational here: we never ask to switch protocols, so it stays an answer, refused as http_101).
    """

    def _read_status(self):
        for _ in range(MAX_INFORMATIONAL):
            version, status, reason = super()._read_status()
            if not (102 <= status < 200):
                return version, status, reason
            http.client._read_headers(self.fp)  # bounded: at most 100 header lines of 64 KiB
        raise http.client.HTTPException(f"more than {MAX_INFORMATIONAL} informational (1xx) answers")


class RetryLater(FetchError):
    """An HTTP 429 or 503 whose ``Retry-After`` asks for ``retry_after_s`` seconds before the next try."""

    def __init__(self, reason: str, error: str, retry_after_s: float):
        super().__init__(reason, f"{error} (Retry-After {retry_after_s:g} s)", transient=True)
        self.retry_after_s = retry_after_s


def _classify(err: BaseException) -> FetchError:
    """The reject reason of an exception from the connection or the HTTP exchange."""
    if isinstance(err, PrivateAddressError):
        return FetchError("private_address", str(err))
    if isinstance(err, TimeoutError):
        return FetchError("timeout", f"timed out: {err}", transient=True)
    if isinstance(err, (OSError, http.client.HTTPException)):
        return FetchError("connection_error", f"{type(err).__name__}: {err}", transient=True)
    # What the URL parser lets through should never get here; if it does, the row says what it was.
    return FetchError("download_error", f"{type(err).__name__}: {err}")


def _http_error(response: http.client.HTTPResponse, url: ParsedUrl) -> FetchError:
    code, reason = response.status, f"http_{response.status}"
    error = f"HTTP {code} {response.reason} from {url.authority}"
    if code in (429, 503) and (wait_s := retry_after_s(response.headers.get("Retry-After"))) is not None:
        return RetryLater(reason, error, wait_s)
    return FetchError(reason, error, reason in TRANSIENT_REASONS)


def declared_length(response: http.client.HTTPResponse) -> int | None:
    """The Content-Length in bytes when it is plain ASCII digits (``²`` passes ``str.isdigit``), else None.

    http.client reads an unreadable value as "no length" too, so the body is then read to its end.
    """
    value = (response.headers.get("Content-Length") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _read_capped(response: http.client.HTTPResponse, config: FetchConfig) -> bytes:
    declared = declared_length(response)
    if declared is not None and declared > config.max_bytes:
        raise FetchError("file_too_large", f"Content-Length {declared} > max {config.max_bytes} bytes")
    chunks, total = [], 0
    while chunk := response.read1(_CHUNK_BYTES):
        total += len(chunk)
        if total > config.max_bytes:
            raise FetchError("file_too_large", f"more than max {config.max_bytes} bytes")
        chunks.append(chunk)
    if declared is not None and total < declared:  # the server closed part-way: worth another try
        raise FetchError(
            "truncated_body",
            f"the body ended after {total} of the {declared} bytes its Content-Length declared",
            transient=True,
        )
    return b"".join(chunks)


def _robots_check():
    """img2dataset's ``is_disallowed`` (its first import takes seconds: done before any deadline starts)."""
    return img2dataset_module("downloader").is_disallowed


def _send_request(connection: http.client.HTTPConnection, url: ParsedUrl, config: FetchConfig) -> None:
    connection.putrequest("GET", url.target, skip_host=True, skip_accept_encoding=True)
    agent = f"{_USER_AGENT} (compatible; {config.user_agent_token}; +https://github.com/rom1504/img2dataset)"
    for name, value in (("Host", url.authority), ("User-Agent", agent), ("Connection", "close")):
        connection.putheader(name, value)
    connection.endheaders()


def _outcome(
    response: http.client.HTTPResponse, url: ParsedUrl, config: FetchConfig, robots_check: Callable
) -> bytes | ParsedUrl:
    """The body of a 2xx answer, or the URL a redirect points at; raises FetchError otherwise."""
    if response.status in _REDIRECTS:
        if not (location := response.headers.get("Location")):
            raise FetchError("bad_redirect", f"HTTP {response.status} without a Location header")
        return resolve_redirect(url, location)
    if 300 <= response.status < 400:
        raise FetchError("bad_redirect", f"HTTP {response.status} {response.reason}: not followed")
    if not 200 <= response.status < 300:
        raise _http_error(response, url)
    directives = set(config.disallowed_header_directives)
    if directives and robots_check(response.headers, config.user_agent_token, directives):
        raise FetchError("robots_disallowed", "X-Robots-Tag disallows use of this image")
    return _read_capped(response, config)


def _exchange(
    url: ParsedUrl, config: FetchConfig, opener: Opener, deadline: Deadline, robots_check: Callable
) -> bytes | ParsedUrl:
    """One request on a fresh guarded connection, every read and write bounded by ``deadline``."""
    connection = opener.connect(url, deadline.remaining_s())
    sock = connection.sock
    try:
        connection.sock = DeadlineSocket(sock, deadline)
        connection.response_class = _Response
        _send_request(connection, url, config)
        return _outcome(connection.getresponse(), url, config, robots_check)
    finally:
        connection.close()
        sock.close()


def _refuse_if_paused_past(limiter, host: str, config: FetchConfig, row_deadline_s: float | None) -> None:
    """``host_paused`` (no request sent) when the host's Retry-After pause outlasts this row's time.

    Waiting would spend the row's whole time in the queue and then blame a ``timeout`` on a server
    that was never asked; the row is transient instead, for a retry or ``--retry-rejects``.
    """
    paused_s = limiter.paused_s(host)
    if paused_s <= 0:
        return
    left_s = min(
        config.timeout_s, (row_deadline_s - time.monotonic()) if row_deadline_s else config.timeout_s
    )
    if paused_s >= left_s:
        raise RetryLater(
            "host_paused",
            f"no request sent: {host} asked every client to wait (Retry-After), {paused_s:.1f} s of "
            f"that pause remain and this row has {max(left_s, 0.0):.1f} s",
            paused_s,
        )


def download(url: str, config: FetchConfig, opener: Opener, row_deadline_s: float | None = None) -> bytes:
    """The bytes at ``url`` (one attempt, redirects followed); raises FetchError with the reject reason.

    The attempt's deadline (``config.timeout_s``, or ``row_deadline_s`` on the monotonic clock if
    sooner) starts once the host's politeness limits let the first request go.
    """
    target = parse_url(url)
    robots_check = _robots_check()
    limiter = host_limiter(config.max_host_connections, config.max_host_requests_per_s)
    deadline = None
    for _ in range(MAX_REDIRECTS + 1):
        _refuse_if_paused_past(limiter, target.host, config, row_deadline_s)
        with limiter.slot(target.host):
            deadline = deadline or Deadline.after(config.timeout_s, row_deadline_s)
            try:
                outcome = _exchange(target, config, opener, deadline, robots_check)
            except FetchError as err:
                if isinstance(err, RetryLater):
                    limiter.pause(target.host, min(err.retry_after_s, config.max_retry_after_s))
                raise
            except (OSError, http.client.HTTPException, ValueError) as err:
                raise _classify(err) from err
        if not isinstance(outcome, ParsedUrl):
            return outcome
        target = outcome
    raise FetchError("bad_redirect", f"more than {MAX_REDIRECTS} redirects")


def _wait_before_retry(err: FetchError, attempt: int, config: FetchConfig) -> float | None:
    """Seconds to wait before the next attempt, or None if the server asked for longer than the cap."""
    wait_s = config.backoff_s * 2**attempt
    if isinstance(err, RetryLater):
        if err.retry_after_s > config.max_retry_after_s:
            return None
        wait_s = max(wait_s, err.retry_after_s)
    return wait_s


def download_with_retries(
    url: str, config: FetchConfig, opener: Opener, sleep: Callable = time.sleep
) -> bytes:
    """``download`` with up to ``config.retries`` more attempts after transient failures, backing off
    (or waiting as ``Retry-After`` asks, up to ``config.max_retry_after_s``); all attempts and waits of
    the row end within ``config.total_timeout_s``."""
    row_deadline_s = time.monotonic() + config.total_timeout_s
    for attempt in range(config.retries + 1):
        try:
            return download(url, config, opener, row_deadline_s)
        except FetchError as err:
            wait_s = _wait_before_retry(err, attempt, config)
            out_of_time = wait_s is None or time.monotonic() + wait_s >= row_deadline_s
            if not err.failure.transient or attempt == config.retries or out_of_time:
                raise
            sleep(wait_s)
    raise AssertionError("unreachable")
