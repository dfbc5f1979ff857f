"""Rejects schema v1: every input row that did not become a shard row, with where and why."""

from __future__ import annotations

import pyarrow as pa

from grit_pipeline.schemas.shard import SCHEMA_KEY

REJECTS_SCHEMA_VERSION = 1

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # read | fetch | parse | ground | assemble | dedup
        pa.field("reason", pa.string(), nullable=False),  # a short machine-readable code, e.g. http_404
        pa.field("error", pa.string()),  # the human-readable detail (exception text), may be null
    ],
    metadata={SCHEMA_KEY: f"rejects/{REJECTS_SCHEMA_VERSION}".encode()},
)


def reject_row(
    key: str, url: str | None, caption: str | None, stage: str, reason: str, error: str | None = None
) -> dict:
    """A rejects row as a plain dict in schema order."""
    return {"key": key, "url": url, "caption": caption, "stage": stage, "reason": reason, "error": error}
