"""Read our shards and GRIT-20M Parquet files through one path, in the v1 layout.

Every Parquet read goes through Arrow-owned memory or pyarrow's own local reader, never a Python
file object (see ``read_parquet``); a file that cannot be read as a shard raises ``ShardFormatError``
with one message per defect.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from grit_pipeline.schemas.committed import committed_files
from grit_pipeline.schemas.shard import PROVENANCE_KEY, SHARD_SCHEMA

READ_REQUIRED_COLUMNS = ("key", "caption")  # the least a file needs to be read as a shard


class ShardFormatError(ValueError):
    """A file that cannot be read as a GRIT shard; ``problems`` holds one message per defect."""

    def __init__(self, path: str, problems: Sequence[str]):
        self.path, self.problems = path, tuple(problems)
        super().__init__(f"{path}: not a readable GRIT shard: " + "; ".join(self.problems))


def _glob_base(fs_path: str) -> str:
    """The folder a glob's matches lie under: the part before its first wildcard, up to a slash."""
    fixed = fs_path[: min(fs_path.index(ch) for ch in "*?[" if ch in fs_path)]
    return fixed.rsplit("/", 1)[0] if "/" in fixed else ""


def _under(paths: list[str], folder: str) -> list[str]:
    prefix = folder.rstrip("/") + "/"
    return [p for p in paths if p.startswith(prefix)]


def list_shard_files(path: str, kind: str = "shards") -> list[str]:
    """Parquet files under ``path``: a file, a folder (searched recursively, ``rejects/`` left out) or a glob.

    In a build's output (a ``manifest.json`` with its committed index in the folder or its parent)
    the files are the committed ones only (``committed``): never a listing, which would also find
    the files a failed and retried bundle left on an object store. ``kind="rejects"`` lists the
    rejects files instead. Returned as URLs with their protocol, sorted. Hidden and temporary files
    are skipped.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if any(ch in fs_path for ch in "*?["):
        found = fs.glob(fs_path)
        base = _glob_base(fs_path)
        committed = committed_files(fs, base, kind) if base else None
        if committed is not None:
            found = sorted(set(found).intersection(committed))
    elif fs.isdir(fs_path):
        committed = committed_files(fs, fs_path, kind)
        if committed is not None:
            found = _under(committed, fs_path)
        else:
            skip = "/rejects/" if kind == "shards" else None
            found = [
                p
                for p in fs.find(fs_path)
                if p.endswith(".parquet") and (skip is None or skip not in p[len(fs_path) :])
            ]
    elif fs.exists(fs_path):
        found = [fs_path]
    else:
        raise FileNotFoundError(f"no such file, folder or glob: {path}")
    found = [p for p in found if not p.rsplit("/", 1)[-1].startswith(".")]
    return sorted(fs.unstrip_protocol(p) if "://" in path else p for p in found)


def _read_into_arrow(fs, fs_path: str, path: str, offset: int, size: int) -> pa.Buffer:
    buffer = pa.allocate_buffer(size)
    view, filled = memoryview(buffer), 0
    with fs.open(fs_path, "rb") as handle:
        handle.seek(offset)
        while filled < len(view):
            count = handle.readinto(view[filled:])
            if not count:
                raise OSError(f"{path}: the file ended after {offset + filled} of {offset + size} bytes")
            filled += count
    return buffer


def _chunk_ranges(metadata: pq.FileMetaData, columns: list[str]) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the column chunks of ``columns`` (top-level names), merged."""
    wanted, ranges = set(columns), []
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.path_in_schema.split(".", 1)[0] not in wanted:
                continue
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)
            ranges.append((start, start + chunk.total_compressed_size))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _read_columns(fs, fs_path: str, path: str, columns: list[str]) -> pa.Table:
    """Only the footer and the chunks of ``columns`` fetched (one batched ranged read), placed at their
    offsets in a file-sized Arrow buffer whose other bytes are never fetched nor read."""
    size = fs.size(fs_path)
    footer = _footer_bytes(fs, fs_path, path, size)
    ranges = _chunk_ranges(pq.read_metadata(pa.BufferReader(b"PAR1" + footer)), columns)
    buffer = pa.allocate_buffer(size)
    view = memoryview(buffer).cast("B")
    view[:4] = b"PAR1"
    view[size - len(footer) :] = footer
    if ranges:
        starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
        for (start, end), data in zip(ranges, fs.cat_ranges([fs_path] * len(ranges), starts, ends)):
            if len(data) != end - start:
                raise OSError(f"{path}: the file ended inside a column chunk ({start}-{end})")
            view[start:end] = data
    return pq.read_table(pa.BufferReader(buffer), columns=columns, pre_buffer=False)


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file at any fsspec URL as an Arrow table, never through a Python file object.

    pyarrow reading a Python file object (an fsspec handle) can leave its I/O threads holding Python
    buffers that are released while the interpreter exits, which aborts the process ("terminate called
    without an active exception", a few percent of runs). Local files use pyarrow's own reader; other
    file systems' bytes are read into Arrow-owned memory first: with ``columns``, only those columns'
    chunks and the footer are fetched (the committed keys of a 230 MB shard are a few hundred kB).
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if isinstance(fs, LocalFileSystem):
        return pq.read_table(fs_path, columns=columns)
    if columns is not None:
        return _read_columns(fs, fs_path, path, list(columns))
    return pq.read_table(
        pa.BufferReader(_read_into_arrow(fs, fs_path, path, 0, fs.size(fs_path))), columns=columns
    )


def _footer_bytes(fs, fs_path: str, path: str, size: int) -> bytes:
    """A Parquet file's footer with its length and closing magic (the last ``length + 8`` bytes)."""
    if size < 12:  # magic, footer length, magic
        raise OSError(f"{path}: {size} bytes is too small for a Parquet file")
    tail = _read_into_arrow(fs, fs_path, path, size - 8, 8).to_pybytes()
    length = struct.unpack("<I", tail[:4])[0]
    if tail[4:] != b"PAR1" or length + 12 > size:
        raise OSError(f"{path}: no Parquet footer (the file is damaged or not Parquet)")
    return _read_into_arrow(fs, fs_path, path, size - length - 8, length + 8).to_pybytes()


def _footer(path: str):
    """A readable source holding a Parquet file's footer: the local file, or the footer bytes alone."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    if isinstance(fs, LocalFileSystem):
        return fs_path
    # The reader checks only the footer and its leading magic, so the footer alone reads as the file's.
    return pa.BufferReader(b"PAR1" + _footer_bytes(fs, fs_path, path, fs.size(fs_path)))


def read_parquet_schema(path: str) -> pa.Schema:
    """The Arrow schema (with its metadata) from a Parquet file's footer; the data is not read."""
    return pq.read_schema(_footer(path))


def read_parquet_metadata(path: str) -> pq.FileMetaData:
    """The Parquet footer (row count, row groups) of a file; the data is not read."""
    return pq.read_metadata(_footer(path))


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file's column type reads as the v1 type without changing values (string vs large_string...)."""
    if got == want or pa.types.is_null(got):
        return True
    for family in (pa.types.is_integer, pa.types.is_floating):
        if family(want):
            return family(got)
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    if pa.types.is_binary(want):
        return pa.types.is_binary(got) or pa.types.is_large_binary(got)
    if pa.types.is_list(want):
        is_list = pa.types.is_list(got) or pa.types.is_large_list(got)
        return is_list and _compatible(got.value_type, want.value_type)
    return False


def column_type_problems(schema: pa.Schema) -> list[str]:
    """One message per v1 column whose type in ``schema`` does not read as the v1 type."""
    return [
        f"column {field.name!r} has type {schema.field(field.name).type}, expected {field.type}"
        for field in SHARD_SCHEMA
        if field.name in schema.names and not _compatible(schema.field(field.name).type, field.type)
    ]


def _conform(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """The columns ``names`` cast to their v1 types; v1 columns the file lacks become nulls."""
    columns, fields = [], []
    for name in names:
        if name in SHARD_SCHEMA.names:
            field = SHARD_SCHEMA.field(name).with_nullable(True)
            present = name in table.column_names
            columns.append(table[name].cast(field.type) if present else pa.nulls(table.num_rows, field.type))
        else:
            columns.append(table[name])
            field = table.schema.field(name)
        fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=table.schema.metadata))


def read_shard(path: str, columns: list[str] | None = None) -> pa.Table:
    """One shard (ours or GRIT-20M) as an Arrow table in the v1 layout; only ``columns`` are read.

    Without ``columns``: every v1 column (missing ones as nulls, e.g. ``image`` in GRIT-20M), then the
    file's extra columns. Raises ``ShardFormatError`` when the file cannot be read as a shard.
    """
    try:
        schema = read_parquet_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise ShardFormatError(path, [f"cannot read as Parquet ({type(err).__name__}: {err})"]) from err
    problems = [f"missing column {name!r}" for name in READ_REQUIRED_COLUMNS if name not in schema.names]
    problems += column_type_problems(schema)
    extra = [name for name in schema.names if name not in SHARD_SCHEMA.names]
    names = list(columns) if columns else [*SHARD_SCHEMA.names, *extra]
    unknown = [name for name in names if name not in SHARD_SCHEMA.names and name not in schema.names]
    problems += [f"no column {name!r} (not a v1 column, not in the file)" for name in unknown]
    if problems:
        raise ShardFormatError(path, problems)
    try:
        table = read_parquet(path, columns=[name for name in names if name in schema.names])
    except (OSError, pa.ArrowException) as err:
        raise ShardFormatError(path, [f"cannot read as Parquet ({type(err).__name__}: {err})"]) from err
    return _conform(table, names)


def iter_rows(path: str, columns: list[str] | None = None) -> Iterator[tuple[str, int, dict]]:
    """``(shard_path, row_index, row)`` for every row of every shard under ``path``."""
    for shard_path in list_shard_files(path):
        for index, row in enumerate(read_shard(shard_path, columns).to_pylist()):
            yield shard_path, index, row


def read_provenance(path: str) -> dict | None:
    """The provenance JSON a shard carries in its Parquet metadata, or None (e.g. a GRIT-20M file)."""
    raw = (read_parquet_schema(path).metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None
