"""Rejects schema v2: every input row that did not become a shard row, with where and why.

v2 adds ``fields``: the row's pass-through values (``--keep-columns``, ``id``, CLIP scores) as a
JSON object, so ``grit build --retry-rejects`` gives a retried row its columns back. v1 files
(without it) are still read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from grit_pipeline.schemas.shard import SCHEMA_KEY

REJECTS_SCHEMA_VERSION = 2
# Any stage: an exception no stage expected (a bug, a library's surprise) ends that row only, with
# the exception's class and message in ``error`` (Beam's dead-letter pattern: no bundle fails on a row).
UNEXPECTED_ERROR = "unexpected_error"

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # read | fetch | parse | ground | assemble | dedup
        pa.field("reason", pa.string(), nullable=False),  # a short machine-readable code, e.g. http_404
        pa.field("error", pa.string()),  # the human-readable detail (exception text), may be null
        pa.field("fields", pa.string()),  # pass-through values as a JSON object, may be null
    ],
    metadata={SCHEMA_KEY: f"rejects/{REJECTS_SCHEMA_VERSION}".encode()},
)


def error_text(err: BaseException) -> str:
    """An exception as a rejects row's ``error``: its class and message."""
    return f"{type(err).__name__}: {err}"


def as_text(value: Any) -> str | None:
    """Any value a reader may hand over, as text Arrow can store (a reject must always be writable).

    Strings stay, except that lone surrogates (undecodable input bytes) become ``\\udcXX`` escapes;
    bytes are decoded as UTF-8 with ``\\xNN`` escapes; anything else becomes its JSON text.

    >>> as_text(42), as_text(["a", 1]), as_text(b"caf\\xe9"), as_text("bad \\udcff byte")
    ('42', '["a", 1]', 'caf\\\\xe9', 'bad \\\\udcff byte')
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return json.dumps(value, default=str)  # ASCII escapes: no lone surrogate gets through


def reject_row(
    key: Any,
    url: Any,
    caption: Any,
    stage: str,
    reason: str,
    error: Any = None,
    fields: Mapping[str, Any] | None = None,
) -> dict:
    """A rejects row as a plain dict in schema order, every value stored as text."""
    return {
        "key": as_text(key) or "",
        "url": as_text(url),
        "caption": as_text(caption),
        "stage": stage,
        "reason": reason,
        "error": as_text(error),
        "fields": json.dumps(dict(fields), default=str) if fields else None,
    }
