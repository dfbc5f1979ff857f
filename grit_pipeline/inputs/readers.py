"""One input file -> its ``InputRow``s, streamed, whatever the bytes hold.

Readers are defensive: text is decoded with ``surrogateescape``, so one undecodable byte makes one
``bad_input_row`` (``rows``) rather than ending the file; a CSV line with the wrong number of fields,
or a JSON line that is not an object, is a ``bad_input_row`` too. A file that breaks off part-way
(truncated gzip, a corrupt Parquet page) ends with one ``unreadable_file`` reject standing for the
rest of it, after the rows read before.
"""

from __future__ import annotations

import csv
import json
import tarfile
from collections.abc import Iterator

import fsspec
import pyarrow.parquet as pq

from grit_pipeline.inputs.config import UNREADABLE_FILE, InputConfig, InputError, InputRow
from grit_pipeline.inputs.files import (
    TABLE_SUFFIXES,
    UNREADABLE,
    column_problem,
    file_format,
    stem,
    suffix,
)
from grit_pipeline.inputs.rows import Where, bad_row, to_row
from grit_pipeline.schemas.reader import read_parquet
from grit_pipeline.schemas.shard import image_column

# Python's csv module refuses fields over 131,072 characters by raising mid-file. Long fields are
# judged per row instead (InputConfig.max_field_chars), so the reader's own limit is lifted.
CSV_FIELD_LIMIT = 2**31 - 1


def _where(path: str, fmt: str, index: int, line: int, prefix: str, typed: bool = False) -> Where:
    return Where(path, fmt, index, line, prefix, typed)


def _read_parquet(path: str, config: InputConfig, fmt: str, prefix: str) -> Iterator[InputRow]:
    with fsspec.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        problem = column_problem(path, parquet.schema_arrow.names, config, fmt)
        if problem:
            raise InputError(problem)
        index = 0
        for batch in parquet.iter_batches(batch_size=config.batch_rows):
            for record in batch.to_pylist():
                yield to_row(record, _where(path, fmt, index, index + 1, prefix, typed=True), config)
                index += 1


def _read_delimited(path: str, config: InputConfig, delimiter: str, prefix: str) -> Iterator[InputRow]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    opened = fsspec.open(
        path, "rt", compression="infer", encoding="utf-8", errors="surrogateescape", newline=""
    )
    with opened as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = list(reader.fieldnames or [])
        problem = column_problem(path, header, config, "table")
        if problem:
            raise InputError(problem)
        for index, record in enumerate(reader):
            where = _where(path, "table", index, reader.line_num, prefix)
            if None in record or None in record.values():  # more or fewer fields than the header
                yield bad_row(where, f"{_field_count(record)} fields, the header has {len(header)}")
            else:
                yield to_row(record, where, config)


def _field_count(record: dict) -> int:
    return sum(v is not None for k, v in record.items() if k is not None) + len(record.get(None) or [])


def _read_jsonl(path: str, config: InputConfig, prefix: str) -> Iterator[InputRow]:
    opened = fsspec.open(path, "rt", compression="infer", encoding="utf-8", errors="surrogateescape")
    with opened as handle:
        index = 0
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = _where(path, "table", index, line_number, prefix)
            try:
                record = json.loads(line)
            except ValueError as err:
                yield bad_row(where, f"not JSON ({err})")
            else:
                if isinstance(record, dict):
                    yield to_row(record, where, config)
                else:
                    yield bad_row(where, f"expected a JSON object, got {type(record).__name__}")
            index += 1


def _tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per webdataset sample, members grouped by their key prefix."""
    with (
        fsspec.open(path, "rb", compression="infer") as handle,
        tarfile.open(fileobj=handle, mode="r|*") as tar,
    ):
        key, parts = None, {}
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            sample, _, ext = name.partition(".")
            if key is not None and sample != key:
                yield key, parts
                parts = {}
            key = sample
            parts[ext.lower()] = tar.extractfile(member).read()
        if key is not None:
            yield key, parts


def _sample_record(key: str, parts: dict[str, bytes]) -> dict:
    """A webdataset sample as img2dataset's parquet row would hold it (raises ValueError when undecodable)."""
    meta = json.loads(parts["json"]) if "json" in parts else {}
    if not isinstance(meta, dict):
        raise ValueError(f"the .json member is a {type(meta).__name__}, not an object")
    record = {**meta, "key": meta.get("key", key)}
    if "txt" in parts:
        record["txt"] = parts["txt"].decode("utf-8")
    image_ext = image_column(list(parts))
    record[image_ext or "jpg"] = parts.get(image_ext) if image_ext else None
    return record


def _read_tar(path: str, config: InputConfig, prefix: str) -> Iterator[InputRow]:
    for index, (key, parts) in enumerate(_tar_samples(path)):
        where = _where(path, "img2dataset", index, index + 1, prefix)
        try:
            record = _sample_record(key, parts)
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            yield bad_row(where, f"sample {key!r}: {err}")
        else:
            yield to_row(record, where, config)


def _rows(path: str, config: InputConfig, prefix: str) -> Iterator[InputRow]:
    fmt, kind = file_format(path, config), suffix(path)
    if kind == ".parquet":
        return _read_parquet(path, config, fmt, prefix)
    if kind == ".tar":
        return _read_tar(path, config, prefix)
    if kind in (".csv", ".tsv"):
        return _read_delimited(path, config, "," if kind == ".csv" else "\t", prefix)
    if kind == ".jsonl":
        return _read_jsonl(path, config, prefix)
    raise InputError(f"{path}: unsupported input ({kind or 'no suffix'}); expected {TABLE_SUFFIXES} or .tar")


def read_file(path: str, config: InputConfig, key_prefix: str | None = None) -> Iterator[InputRow]:
    """Every row of one input file, streamed; a file that breaks off ends with an ``unreadable_file`` row.

    Column and format errors (``InputError``) propagate: ``check_input_files`` finds them before a job.
    """
    prefix, count = key_prefix or stem(path), 0
    try:
        for row in _rows(path, config, prefix):
            yield row
            count += 1
    except InputError:
        raise
    except UNREADABLE as err:
        error = f"{path}: unreadable after {count} row(s): {type(err).__name__}: {err}"
        yield InputRow(f"{prefix}-unreadable", None, None, path, reject=(UNREADABLE_FILE, error), index=count)


def read_retry_rows(rejects_path: str, reasons: frozenset[str]) -> Iterator[InputRow]:
    """Rows of a rejects file whose reason is in ``reasons`` (transient failures), to be tried again,
    with their pass-through values (rejects v2 ``fields``; v1 files have none)."""
    table = read_parquet(rejects_path)
    has_fields = "fields" in table.column_names
    columns = ["key", "url", "caption", "reason"] + (["fields"] if has_fields else [])
    for index, record in enumerate(table.select(columns).to_pylist()):
        if record["reason"] in reasons:
            fields = json.loads(record["fields"]) if has_fields and record["fields"] else {}
            yield InputRow(
                record["key"], record["url"], record["caption"], rejects_path, fields=fields, index=index
            )
