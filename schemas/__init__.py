"""The shard and rejects schemas (defined once, versioned) and the readers and writers built on them.

The bottom layer: nothing here imports the rest of grit_pipeline (tests/test_layers.py checks it).
"""

from grit_pipeline.schemas.reader import (
    ShardFormatError,
    column_type_problems,
    iter_rows,
    list_shard_files,
    read_parquet,
    read_parquet_metadata,
    read_parquet_schema,
    read_provenance,
    read_shard,
)
from grit_pipeline.schemas.rejects import REJECTS_SCHEMA, REJECTS_SCHEMA_VERSION, reject_row
from grit_pipeline.schemas.shard import (
    GRIT20M_COLUMNS,
    IMAGE_COLUMNS,
    PROVENANCE_KEY,
    SCHEMA_KEY,
    SHARD_SCHEMA,
    SHARD_SCHEMA_VERSION,
    Box,
    GroundedSpan,
    group_by_span,
    image_bytes,
    image_column,
    shard_schema,
    spans_from_column,
    spans_to_column,
)
from grit_pipeline.schemas.writer import atomic_open, write_table

__all__ = [
    "GRIT20M_COLUMNS",
    "IMAGE_COLUMNS",
    "PROVENANCE_KEY",
    "REJECTS_SCHEMA",
    "REJECTS_SCHEMA_VERSION",
    "SCHEMA_KEY",
    "SHARD_SCHEMA",
    "SHARD_SCHEMA_VERSION",
    "Box",
    "GroundedSpan",
    "ShardFormatError",
    "atomic_open",
    "column_type_problems",
    "group_by_span",
    "image_bytes",
    "image_column",
    "iter_rows",
    "list_shard_files",
    "read_parquet",
    "read_parquet_metadata",
    "read_parquet_schema",
    "read_provenance",
    "read_shard",
    "reject_row",
    "shard_schema",
    "spans_from_column",
    "spans_to_column",
    "write_table",
]
