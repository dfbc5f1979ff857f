"""Atomic writes (temporary name, then rename) and Parquet files with provenance in their metadata."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from grit_pipeline.schemas.shard import PROVENANCE_KEY


@contextmanager
def atomic_open(fs: fsspec.AbstractFileSystem, path: str, mode: str = "wb") -> Iterator:
    """A handle on a hidden temporary file beside ``path``, renamed to ``path`` when the block succeeds.

    Readers see the old file or the new one, whole: a killed job never leaves a partial file under the
    final name, and the temporary file is removed when the block fails.
    """
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp" if parent else f".{name}.{uuid.uuid4().hex}.tmp"
    if parent:
        fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(tmp, mode) as handle:
            yield handle
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``schema`` in its order; nullable columns it lacks become nulls.

    Tables written by an earlier schema version (a v1 rejects file rewritten by a retry run) so
    stay writable under the current one.
    """
    wanted = [f for f in schema if f.name in table.column_names or f.nullable]
    columns = [
        table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in wanted
    ]
    return pa.Table.from_arrays(columns, names=[f.name for f in wanted])


def write_table(
    rows: Sequence[Mapping] | pa.Table,
    path: str,
    schema: pa.Schema,
    provenance: Mapping | None = None,
    row_group_size: int | None = None,
    atomic: bool = True,
) -> int:
    """Write ``rows`` to ``path`` (any fsspec URL) and return the number of rows written.

    Atomically by default (``atomic_open``); ``atomic=False`` writes ``path`` directly, once, for
    names no reader takes until a commit (staged files). ``provenance`` (the run's configuration:
    versions, models, thresholds) is stored as JSON in the Parquet key-value metadata.
    """
    table = (
        _conform(rows, schema)
        if isinstance(rows, pa.Table)
        else pa.Table.from_pylist(list(rows), schema=schema)
    )
    metadata = dict(schema.metadata or {})
    if provenance is not None:
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.cast(schema).replace_schema_metadata(metadata)
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not atomic:  # a name no reader takes until a commit: written once, in place
        if "/" in fs_path:
            fs.makedirs(fs_path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(fs_path, "wb") as handle:
            pq.write_table(table, handle, row_group_size=row_group_size, compression="zstd")
        return table.num_rows
    with atomic_open(fs, fs_path, "wb") as handle:
        pq.write_table(table, handle, row_group_size=row_group_size, compression="zstd")
    return table.num_rows
