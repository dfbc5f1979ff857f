"""Atomic Parquet writes with provenance in the file metadata."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_KEY = b"grit_pipeline.schema"
PROVENANCE_KEY = b"grit_pipeline.provenance"


def write_table(
    rows: Sequence[Mapping] | pa.Table,
    path: str,
    schema: pa.Schema,
    provenance: Mapping | None = None,
    row_group_size: int | None = None,
    atomic: bool = True,
) -> int:
    """Write ``rows`` to ``path`` (any fsspec URL) and return the number of rows written.

    The file is written under a hidden temporary name in the same folder and renamed into place,
    so a killed job never leaves a partial file under a shard's name. ``provenance`` (the run's
    configuration: versions, models, thresholds) is stored as JSON in the Parquet key-value metadata.
    ``atomic=False`` writes ``path`` directly, once (for names no reader takes until a commit).
    """
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows), schema=schema)
    metadata = dict(schema.metadata or {})
    if provenance is not None:
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.cast(schema).replace_schema_metadata(metadata)
    fs, fs_path = fsspec.core.url_to_fs(path)
    parent, name = fs_path.rsplit("/", 1) if "/" in fs_path else ("", fs_path)
    tmp_path = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if not atomic:
        with fs.open(fs_path, "wb") as handle:
            pq.write_table(table, handle, row_group_size=row_group_size, compression="zstd")
        return table.num_rows
    try:
        with fs.open(tmp_path, "wb") as handle:
            pq.write_table(table, handle, row_group_size=row_group_size, compression="zstd")
        fs.mv(tmp_path, fs_path)
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path)
    return table.num_rows
