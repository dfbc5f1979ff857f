"""Download, check, decode and resize images, with guards.

What comes from img2dataset: the X-Robots-Tag check (``is_disallowed``, same directives and user
agent token) and the resize policy's semantics (``resize``: its sizes, modes and encoding, and its
area-average pixels, with a decode at reduced DCT scale where that costs nothing measurable). What is added here:

- an address guard: every connection, the first one and each redirect, resolves the host and
  refuses loopback, private, link-local (cloud metadata), shared, reserved and multicast addresses,
  then connects to the address it checked, so a second DNS answer cannot slip past;
- only ``http``/``https``, no proxies from the environment (a proxy would hide the real address);
- one strict URL parser for every URL (input and redirects), so the guard checks the host connected to;
- one deadline per attempt (connect, headers and body) and one per row, a maximum download size and
  a maximum pixel count read from the image header before anything is decoded (decompression bombs),
  and degenerate shapes refused;
- every pixel mode converted to 8-bit RGB, EXIF orientation applied (``pixels``);
- retries with exponential backoff for transient failures (timeouts, connection errors, 5xx, 429),
  or after the server's ``Retry-After`` (capped); per-host connection and request-rate limits;
- the sha256 of the downloaded bytes and the original width and height.

Modules: ``config`` (options), ``results`` (what comes out), ``urls`` (one URL parser), ``guard``
(addresses), ``deadline`` (one time limit over every socket read), ``politeness`` (per-host limits,
Retry-After), ``download`` (one URL, retries), ``decode`` (bytes -> image), ``pixels`` (modes,
orientation), ``resize`` (sizes, resampling, encoding), ``area`` (the exact area average),
``scratch`` (reused buffers), ``pool`` (the ``Fetcher``: download threads, one decode thread per core).
"""

from grit_pipeline.fetch.config import BOX_SAFE_RESIZE_MODES, TRANSIENT_REASONS, FetchConfig
from grit_pipeline.fetch.decode import check_header, decode_image, decode_one, make_resizer, open_rgb
from grit_pipeline.fetch.download import download, download_with_retries
from grit_pipeline.fetch.guard import AddressPolicy, PrivateAddressError, build_opener, is_public_address
from grit_pipeline.fetch.pool import Fetcher
from grit_pipeline.fetch.results import FetchedImage, FetchError, FetchFailure

__all__ = [
    "BOX_SAFE_RESIZE_MODES",
    "TRANSIENT_REASONS",
    "AddressPolicy",
    "FetchConfig",
    "FetchError",
    "FetchFailure",
    "FetchedImage",
    "Fetcher",
    "PrivateAddressError",
    "build_opener",
    "check_header",
    "decode_image",
    "decode_one",
    "download",
    "download_with_retries",
    "is_public_address",
    "make_resizer",
    "open_rgb",
]
