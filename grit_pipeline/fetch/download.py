"""One URL -> its bytes: a total time limit per attempt, a maximum size, img2dataset's X-Robots-Tag
check (``is_disallowed``, same directives and user-agent token), and retries with exponential
backoff for transient failures (timeouts, connection errors, 5xx, 429)."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from grit_pipeline.fetch.config import TRANSIENT_REASONS, FetchConfig
from grit_pipeline.fetch.decode import img2dataset_module
from grit_pipeline.fetch.guard import PrivateAddressError
from grit_pipeline.fetch.results import FetchError

_USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
_CHUNK_BYTES = 1 << 16


def _classify(err: BaseException) -> FetchError:
    """The reject reason of a download exception."""
    if isinstance(err, urllib.error.HTTPError):
        code = err.code
        if 300 <= code < 400:  # a redirect urllib refused to follow (e.g. to file:) or a loop
            return FetchError("bad_redirect", f"HTTP {code}: {err.reason}")
        return FetchError(f"http_{code}", f"HTTP {code} {err.reason}", f"http_{code}" in TRANSIENT_REASONS)
    cause = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(cause, PrivateAddressError):
        return FetchError("private_address", str(cause))
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return FetchError("timeout", f"timed out: {cause}", transient=True)
    if isinstance(cause, str) and cause.startswith("unknown url type"):
        return FetchError("invalid_url", cause)
    if isinstance(cause, (OSError, http.client.HTTPException)):
        return FetchError("connection_error", f"{type(cause).__name__}: {cause}", transient=True)
    return FetchError("download_error", f"{type(cause).__name__}: {cause}")


def _read_capped(response, config: FetchConfig, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > config.max_bytes:
        raise FetchError("file_too_large", f"Content-Length {declared} > max {config.max_bytes} bytes")
    chunks, total = [], 0
    while chunk := response.read(_CHUNK_BYTES):
        total += len(chunk)
        if total > config.max_bytes:
            raise FetchError("file_too_large", f"more than max {config.max_bytes} bytes")
        if time.monotonic() > deadline:  # a server trickling bytes must not hold a thread forever
            raise FetchError("timeout", f"download took longer than {config.timeout_s} s", transient=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _robots_check():
    return img2dataset_module("downloader").is_disallowed


def download(url: str, config: FetchConfig, opener: urllib.request.OpenerDirector) -> bytes:
    """The bytes at ``url`` (one attempt); raises FetchError with the reject reason."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise FetchError("invalid_url", f"expected an http(s) URL, got {url!r}")
    headers = {
        "User-Agent": f"{_USER_AGENT} (compatible; {config.user_agent_token}; +https://github.com/rom1504/img2dataset)"
    }
    deadline = time.monotonic() + config.timeout_s
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=config.timeout_s) as response:
            directives = set(config.disallowed_header_directives)
            if directives and _robots_check()(response.headers, config.user_agent_token, directives):
                raise FetchError("robots_disallowed", "X-Robots-Tag disallows use of this image")
            return _read_capped(response, config, deadline)
    except FetchError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise _classify(err) from err


def download_with_retries(
    url: str, config: FetchConfig, opener: urllib.request.OpenerDirector, sleep: Callable = time.sleep
) -> bytes:
    """``download`` with up to ``config.retries`` more attempts after transient failures, backing off."""
    for attempt in range(config.retries + 1):
        try:
            return download(url, config, opener)
        except FetchError as err:
            if not err.failure.transient or attempt == config.retries:
                raise
            sleep(config.backoff_s * 2**attempt)
    raise AssertionError("unreachable")
