"""Read our shards and GRIT-20M Parquet files through one path, in the v1 layout."""

from __future__ import annotations

import json
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from grit_pipeline.schemas.shard import SHARD_SCHEMA
from grit_pipeline.schemas.writer import PROVENANCE_KEY


def list_shard_files(path: str) -> list[str]:
    """Parquet files under ``path``: a file, a folder (searched recursively, ``rejects/`` left out) or a glob.

    Returned as URLs with their protocol, sorted. Hidden and temporary files are skipped.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if any(ch in fs_path for ch in "*?["):
        found = fs.glob(fs_path)
    elif fs.isdir(fs_path):
        found = [
            p for p in fs.find(fs_path) if p.endswith(".parquet") and "/rejects/" not in p[len(fs_path) :]
        ]
    elif fs.exists(fs_path):
        found = [fs_path]
    else:
        raise FileNotFoundError(f"no such file, folder or glob: {path}")
    found = [p for p in found if not p.rsplit("/", 1)[-1].startswith(".")]
    return sorted(fs.unstrip_protocol(p) if "://" in path else p for p in found)


def _conform(table: pa.Table) -> pa.Table:
    """Cast to the v1 columns: missing ones (e.g. ``image`` in GRIT-20M) become nulls; extra ones are kept after."""
    columns, fields = [], []
    for field in SHARD_SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name].cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
        fields.append(field.with_nullable(True))
    for name in table.column_names:
        if name not in SHARD_SCHEMA.names:
            columns.append(table[name])
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file at any fsspec URL as an Arrow table, never through a Python file object.

    pyarrow reading a Python file object (an fsspec handle) can leave its I/O threads holding Python
    buffers that are released while the interpreter exits, which aborts the process ("terminate called
    without an active exception", a few percent of runs). Local files use pyarrow's own reader; other
    file systems' bytes are read into Arrow-owned memory first.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if isinstance(fs, LocalFileSystem):
        return pq.read_table(fs_path, filesystem=fs, columns=columns)
    buffer = pa.allocate_buffer(fs.size(fs_path))
    view, filled = memoryview(buffer), 0
    with fs.open(fs_path, "rb") as handle:
        while filled < len(view):
            count = handle.readinto(view[filled:])
            if not count:
                raise OSError(f"{path}: the file ended after {filled} of {len(view)} bytes")
            filled += count
    return pq.read_table(pa.BufferReader(buffer), columns=columns)


def read_shard(path: str, columns: list[str] | None = None) -> pa.Table:
    """One shard (ours or GRIT-20M) as an Arrow table in the v1 layout; ``columns`` selects a subset."""
    table = read_parquet(path)
    if "key" not in table.column_names or "caption" not in table.column_names:
        raise ValueError(
            f"{path}: not a GRIT shard (needs at least 'key' and 'caption'), has {table.column_names}"
        )
    table = _conform(table)
    return table.select(columns) if columns else table


def iter_rows(path: str, columns: list[str] | None = None) -> Iterator[tuple[str, int, dict]]:
    """``(shard_path, row_index, row)`` for every row of every shard under ``path``."""
    for shard_path in list_shard_files(path):
        for index, row in enumerate(read_shard(shard_path, columns).to_pylist()):
            yield shard_path, index, row


def read_provenance(path: str) -> dict | None:
    """The provenance JSON a shard carries in its Parquet metadata, or None (e.g. a GRIT-20M file)."""
    with fsspec.open(path, "rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    raw = metadata.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None
