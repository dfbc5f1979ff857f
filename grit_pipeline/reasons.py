"""Every reject reason of `grit build`: its stage, whether it is transient, what it means.

Transient reasons are the ones another attempt may cure (the server, the network or the host's
pause, not the row): the fetch stage retries them within the row's time (``--retries``,
``--total-timeout``), and ``grit build --retry-rejects OUTPUT`` runs their rows again later. Every
other reason is final: the same row would fail the same way. The README's table of reasons is
this table (``tests/test_hostile_round_two_io.py`` compares the two, and the reasons the code
raises with both).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    stage: str
    transient: bool
    meaning: str


# HTTP answers are ``http_NNN``: 408, 429 and every 5xx are transient, every other code final.
TRANSIENT_HTTP_CODES = frozenset({408, 429, *range(500, 600)})

REASONS: dict[str, Reason] = {
    "missing_url": Reason("read", False, "no value in the URL column"),
    "bad_input_row": Reason("read", False, "undecodable bytes, wrong types, over-long fields, a broken line"),
    "unreadable_file": Reason("read", False, "an input file that broke off part-way (one row for the rest)"),
    "duplicate_key": Reason("read", False, "a key an earlier row or an earlier committed run holds"),
    "no_image_in_source": Reason("read", False, "an img2dataset row without image bytes"),
    "missing_image_file": Reason(
        "read", False, "an --image-path-column file that is missing, not a file or unreadable"
    ),
    "bad_image_path": Reason("read", False, "a URL, or a path (links resolved) outside --image-root"),
    "unknown_resize_geometry": Reason(
        "read", False, "an img2dataset image whose original frame cannot be inferred"
    ),
    "duplicate": Reason(
        "dedup", False, "a URL, local file or image hash an earlier row or committed run has"
    ),
    "empty_caption": Reason("parse", False, "no caption text"),
    "caption_too_long": Reason("parse", False, "over 1,000 characters"),
    "no_noun_chunk": Reason("parse", False, "no noun chunk that can be a phrase"),
    "abstract_nouns_only": Reason("parse", False, "only abstract noun chunks"),
    "timeout": Reason("fetch", True, "no complete response within --timeout / --total-timeout"),
    "connection_error": Reason("fetch", True, "refused, reset or a broken HTTP exchange"),
    "truncated_body": Reason("fetch", True, "the body ended before its Content-Length"),
    "host_paused": Reason(
        "fetch", True, "no request sent: the host's Retry-After pause outlasts the row's time"
    ),
    "http_NNN": Reason("fetch", False, "an HTTP error answer; http_408, http_429 and http_5xx are transient"),
    "private_address": Reason("fetch", False, "the host resolves to an address the guard refuses"),
    "invalid_url": Reason("fetch", False, "a URL the strict parser refuses"),
    "bad_redirect": Reason("fetch", False, "a redirect without a usable Location, or more than 10"),
    "robots_disallowed": Reason("fetch", False, "X-Robots-Tag forbids the use (noai, noindex, ...)"),
    "file_too_large": Reason("fetch", False, "over --max-bytes (downloads and local image files)"),
    "unsupported_format": Reason(
        "fetch", False, "an image format outside the decoded list (ICO, EPS, PSD, ...)"
    ),
    "not_an_image": Reason("fetch", False, "bytes that are no image, or corrupt pixel data"),
    "too_many_pixels": Reason("fetch", False, "over --max-pixels, read from the header before decoding"),
    "degenerate_image": Reason("fetch", False, "shortest side below 16 px or aspect ratio over 10"),
    "resize_failed": Reason("fetch", False, "the resized image cannot be encoded"),
    "download_error": Reason("fetch", False, "a client error no other reason covers (please report it)"),
    "no_box_above_threshold": Reason("ground", False, "no span got a box above --box-threshold"),
    "grounding_error": Reason("ground", False, "an exception grounding this image, after a row-by-row retry"),
    "unrenderable_caption": Reason(
        "assemble", False, "a caption holding '<', '>' or a look-alike, or a bad span"
    ),
    "unexpected_error": Reason(
        "any", False, "an exception no stage expected (class and message in error); that row only"
    ),
}

TRANSIENT_REASONS = frozenset(
    {name for name, reason in REASONS.items() if reason.transient}
    | {f"http_{code}" for code in TRANSIENT_HTTP_CODES}
)


def is_known(reason: str) -> bool:
    """True for a reason of the table (``http_NNN`` standing for every three-digit HTTP code)."""
    if reason.startswith("http_") and reason[5:].isascii() and reason[5:].isdigit() and len(reason) == 8:
        return True
    return reason in REASONS
