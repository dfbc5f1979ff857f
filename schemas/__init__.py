"""The shard and rejects schemas (defined once, versioned) and the readers and writers built on them."""

from grit_pipeline.schemas.reader import iter_rows, list_shard_files, read_provenance, read_shard
from grit_pipeline.schemas.rejects import REJECTS_SCHEMA, REJECTS_SCHEMA_VERSION, reject_row
from grit_pipeline.schemas.shard import (
    GRIT20M_COLUMNS,
    SHARD_SCHEMA,
    SHARD_SCHEMA_VERSION,
    GroundedSpan,
    shard_schema,
    spans_from_column,
    spans_to_column,
)
from grit_pipeline.schemas.writer import PROVENANCE_KEY, SCHEMA_KEY, write_table

__all__ = [
    "GRIT20M_COLUMNS",
    "PROVENANCE_KEY",
    "REJECTS_SCHEMA",
    "REJECTS_SCHEMA_VERSION",
    "SCHEMA_KEY",
    "SHARD_SCHEMA",
    "SHARD_SCHEMA_VERSION",
    "GroundedSpan",
    "iter_rows",
    "list_shard_files",
    "read_provenance",
    "read_shard",
    "reject_row",
    "shard_schema",
    "spans_from_column",
    "spans_to_column",
    "write_table",
]
