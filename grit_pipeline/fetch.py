"""Download, check, decode and resize images, on img2dataset's primitives, with guards.

What comes from img2dataset: the X-Robots-Tag check (``is_disallowed``, same directives and user
agent token) and the ``Resizer`` (decode with OpenCV, resize, re-encode). What is added here:

- an address guard: every connection, the first one and each redirect, resolves the host and
  refuses loopback, private, link-local (cloud metadata), shared, reserved and multicast addresses,
  then connects to the address it checked, so a second DNS answer cannot slip past;
- only ``http``/``https``, no proxies from the environment (a proxy would hide the real address);
- a total time limit per attempt, a maximum download size and a maximum pixel count read from the
  image header before anything is decoded (decompression bombs);
- retries with exponential backoff for transient failures (timeouts, connection errors, 5xx, 429);
- the sha256 of the downloaded bytes and the original width and height.

``Fetcher`` downloads in a thread pool and decodes in the caller's thread, as img2dataset does
(its Resizer redirects the process's stdout/stderr while decoding, which is not thread-safe).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import ipaddress
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

# img2dataset imports albumentations, which checks for updates over the network on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Pillow warns above its own pixel limit while reading a header; ``check_header`` applies ours
# (``max_pixels``) instead. Set once: ``warnings.catch_warnings`` per call is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Resize modes that keep the whole picture: boxes normalised by the original size stay valid.
# img2dataset's center_crop and border would move or cut the content the boxes point at.
BOX_SAFE_RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest")
# Failures worth another attempt (and worth `grit build --retry-rejects` later).
TRANSIENT_REASONS = frozenset(
    {"timeout", "connection_error", "http_408", "http_429"} | {f"http_{c}" for c in range(500, 600)}
)
_USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class FetchConfig:
    """Download and image options (all recorded in the run manifest)."""

    timeout_s: float = 10.0  # per attempt, whole response included
    retries: int = 2  # extra attempts after a transient failure
    backoff_s: float = 0.5  # wait before retry n is backoff_s * 2**n
    thread_count: int = 32  # concurrent downloads per worker process
    max_bytes: int = 32 * 2**20  # a photo above 32 MiB is almost surely not a web photo
    # 50 Mpx: above any camera photo we want (8K UHD is 33 Mpx), far below a decompression bomb's gigapixels.
    max_pixels: int = 50_000_000
    allow_private_addresses: bool = False  # tests and private mirrors only
    allowed_networks: tuple[str, ...] = ()  # CIDRs exempt from the guard, e.g. a private mirror's subnet
    # As img2dataset: its token, so a site that blocks img2dataset blocks us too, and its directives.
    user_agent_token: str = "img2dataset"
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    # Resize policy (img2dataset's options). Default: shortest side 512 when bigger, aspect kept,
    # nothing cropped, so boxes normalised by the original size stay valid; Grounding DINO
    # upsamples to 800 anyway and Kosmos-2 trains at 224.
    image_size: int = 512
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = 95

    def __post_init__(self) -> None:
        if self.resize_mode not in BOX_SAFE_RESIZE_MODES:
            raise ValueError(
                f"resize mode {self.resize_mode!r} would crop or pad the image and break the boxes; "
                f"use one of {', '.join(BOX_SAFE_RESIZE_MODES)}"
            )
        for network in self.allowed_networks:
            ipaddress.ip_network(network)  # raises ValueError naming a malformed CIDR
        if self.retries < 0 or self.timeout_s <= 0 or self.thread_count < 1:
            raise ValueError("retries must be >= 0, timeout_s > 0 and thread_count >= 1")


@dataclass(frozen=True)
class FetchedImage:
    """A decoded, resized image: encoded bytes plus original size and the hash of what was downloaded."""

    image: bytes
    width: int  # original size
    height: int
    image_width: int  # size of ``image``
    image_height: int
    sha256: str


@dataclass(frozen=True)
class FetchFailure:
    """Why an image could not be used: a reject reason, the error text, and whether a retry may help."""

    reason: str
    error: str
    transient: bool = False


class FetchError(Exception):
    """Raised inside the fetch stage; turned into a ``FetchFailure``."""

    def __init__(self, reason: str, error: str, transient: bool = False):
        super().__init__(error)
        self.failure = FetchFailure(reason, error, transient)


class PrivateAddressError(OSError):
    """The host resolved to an address the guard refuses."""


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for globally routable unicast addresses (IPv4-mapped IPv6 judged by the IPv4 inside)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses a download may connect to."""

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.allow_private or is_public_address(ip):
            return True
        return any(ip in ipaddress.ip_network(network) for network in self.allowed_networks)


def guarded_create_connection(address, timeout=None, source_address=None, *, policy: AddressPolicy):
    """``socket.create_connection`` that refuses non-public addresses, checked after DNS resolution.

    Every address the name resolves to is checked before connecting (a name that resolves to a
    mix is refused), and the socket connects to the checked address itself.
    """
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if not policy.allows(ip):
            raise PrivateAddressError(f"{host} resolves to {ip}, which is not a public address")
    last_error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            last_error = err
            sock.close()
    raise last_error or OSError(f"cannot resolve {host}")


def _guarded(connection_class, policy: AddressPolicy):
    def make(host, **kwargs):
        connection = connection_class(host, **kwargs)
        connection._create_connection = lambda *a, **k: guarded_create_connection(*a, **k, policy=policy)
        return connection

    return make


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self._factory = _guarded(http.client.HTTPConnection, policy)

    def http_open(self, req):
        return self.do_open(self._factory, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self._factory = _guarded(http.client.HTTPSConnection, policy)

    def https_open(self, req):
        return self.do_open(self._factory, req, context=self._context)


def build_opener(policy: AddressPolicy = AddressPolicy()) -> urllib.request.OpenerDirector:
    """An opener for http/https only, every connection (redirects included) behind the address guard."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _GuardedHTTPHandler(policy),
        _GuardedHTTPSHandler(policy),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),  # ftp:, file:, data: ... -> "unknown url type"
    ):
        opener.add_handler(handler)
    return opener


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
    from img2dataset.downloader import is_disallowed  # imported on first use: img2dataset is heavy

    return is_disallowed


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


def _thread_safe_resizer_module():
    """img2dataset's resizer module, made safe to call from several threads at once.

    Its ``Resizer.__call__`` wraps decoding in ``SuppressStdoutStderr``, which swaps the process's
    file descriptors 1 and 2 with /dev/null and back: two threads doing that at once can leave
    stdout or stderr pointing at /dev/null for good, and every other thread's output (our progress
    lines, Beam's logs) is swallowed while it is active. We replace it with a no-op and silence
    OpenCV's own warnings instead; libjpeg may still print "Corrupt JPEG data" for broken files.
    Decoding in the download threads is what lets this stage use more than one core.
    """
    import contextlib

    import cv2
    from img2dataset import resizer

    resizer.SuppressStdoutStderr = contextlib.nullcontext
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return resizer


def make_resizer(config: FetchConfig):
    """img2dataset's Resizer for the configured policy; skip_reencode keeps bytes that need no change."""
    Resizer = _thread_safe_resizer_module().Resizer

    return Resizer(
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        resize_only_if_bigger=config.resize_only_if_bigger,
        encode_format=config.encode_format,
        encode_quality=config.encode_quality,
        skip_reencode=True,
    )


def check_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the image header, without decoding pixels; rejects non-images and bombs."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as err:
        raise FetchError("too_many_pixels", str(err)) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise FetchError("not_an_image", f"cannot identify an image: {err}") from err
    if width * height > max_pixels:
        raise FetchError("too_many_pixels", f"{width}x{height} = {width * height} pixels > max {max_pixels}")
    return width, height


def decode(
    data: bytes, config: FetchConfig, resizer, original_size: tuple[int, int] | None = None
) -> FetchedImage:
    """Check, decode and resize downloaded bytes; ``original_size`` overrides the decoded size
    (img2dataset outputs hold resized bytes but record the original size)."""
    check_header(data, config.max_pixels)
    image, image_width, image_height, width, height, error = resizer(io.BytesIO(data))
    if error is not None:
        reason = "not_an_image" if "decod" in error.lower() else "resize_failed"
        raise FetchError(reason, error)
    if original_size and all(original_size):
        width, height = original_size
    return FetchedImage(image, width, height, image_width, image_height, hashlib.sha256(data).hexdigest())


def fetch_one(url: str, config: FetchConfig, opener, resizer, slots) -> FetchedImage | FetchFailure:
    """Download (with retries), check and decode one URL; failures come back as values."""
    try:
        data = download_with_retries(url, config, opener)
    except FetchError as err:
        return err.failure
    return decode_one(data, config, resizer, slots)


def decode_one(
    data: bytes, config: FetchConfig, resizer, slots, original_size=None
) -> FetchedImage | FetchFailure:
    """``decode`` with at most ``slots`` decodes at once: one per core, the rest of the threads wait
    on the network rather than contending for the GIL in the Resizer's Python parts."""
    try:
        with slots:
            return decode(data, config, resizer, original_size)
    except FetchError as err:
        return err.failure


@dataclass  # not frozen: it owns a thread pool
class Fetcher:
    """Downloads and decodes in a thread pool (OpenCV releases the GIL), with bounded work in flight.

    ``submit(tag, url)`` (or ``submit_bytes`` for bytes in hand) returns the finished
    ``(tag, FetchedImage | FetchFailure)`` pairs that are ready, blocking while too much is in
    flight; ``drain()`` returns the rest.
    """

    config: FetchConfig
    max_in_flight: int = 0  # 0: twice the thread count, as img2dataset's semaphore
    _pending: dict[Future, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        policy = AddressPolicy(self.config.allow_private_addresses, self.config.allowed_networks)
        self._opener = build_opener(policy)
        self._resizer = make_resizer(self.config)
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

    def _track(self, tag: Any, future: Future) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        self._pending[future] = tag
        if len(self._pending) >= self.max_in_flight:
            wait(self._pending, return_when=FIRST_COMPLETED)
        return [(self._pending.pop(f), f.result()) for f in [f for f in self._pending if f.done()]]

    def drain(self) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        wait(self._pending)
        done, self._pending = [(tag, f.result()) for f, tag in self._pending.items()], {}
        return done

    def fetch_all(self, items: Iterable[tuple[Any, str]]) -> list[tuple[Any, FetchedImage | FetchFailure]]:
        """Everything at once (tests, benchmarks): results in completion order."""
        results = []
        for tag, url in items:
            results += self.submit(tag, url)
        return results + self.drain()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
