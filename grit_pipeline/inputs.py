"""Input readers: every accepted input file -> ``InputRow`` records, streamed, on any fsspec path.

Accepted inputs:

- url+caption tables: Parquet, CSV, TSV or JSON lines (``.gz``, ``.bz2``, ``.zst`` ... inferred
  by fsspec), with configurable column names;
- img2dataset output folders: Parquet with image bytes (a ``jpg``/``png``/``webp`` column) or
  webdataset tars (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``); the bytes are used, nothing is
  downloaded again;
- GRIT-20M Parquet files: url + caption are re-grounded; ``id`` and ``clip_similarity_*`` pass through.

Rows that cannot be used (no URL, img2dataset stored no image, a malformed line) come out with a
``reject`` reason instead of being dropped, so every input row is accounted for.
"""

from __future__ import annotations

import csv
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from grit_pipeline.schemas.reader import read_parquet

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
IMAGE_COLUMNS = ("jpg", "png", "webp", "jpeg", "image")
# Input columns that are shard columns too (GRIT-20M metadata), passed through with their shard type.
SHARD_PASSTHROUGH = {"id": int, "clip_similarity_vitb32": float, "clip_similarity_vitl14": float}
INPUT_FORMATS = ("auto", "table", "img2dataset")


class InputError(ValueError):
    """An input file or its columns are not what the job was told to expect."""


@dataclass(frozen=True)
class InputConfig:
    """How to read the inputs (recorded in the run manifest)."""

    url_column: str = "url"
    caption_column: str = "caption"
    key_column: str | None = None  # None: "key" when the input has one, else "<file stem>-<row number>"
    keep_columns: tuple[str, ...] = ()  # extra columns copied to the shards, like img2dataset's
    # A column of image file paths (relative to the table's folder): bytes read from there, no download.
    image_path_column: str | None = None
    input_format: str = "auto"  # auto: img2dataset when a file holds image bytes, else a url table
    batch_rows: int = 1024  # Parquet rows read at a time

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise InputError(f"input format must be one of {INPUT_FORMATS}, got {self.input_format!r}")


@dataclass(frozen=True)
class InputRow:
    """One input row on its way through the job."""

    key: str
    url: str | None
    caption: str | None
    source: str  # the input file it came from
    image: bytes | None = None  # already-downloaded bytes (img2dataset inputs)
    original_size: tuple[int, int] | None = None  # recorded by img2dataset before it resized
    sha256: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # pass-through shard columns and --keep-columns
    reject: tuple[str, str] | None = None  # (reason, error) when the row is unusable as read


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    for compression in COMPRESSION_SUFFIXES:
        if name.endswith(compression):
            name = name[: -len(compression)]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".", 1)[0]


def list_input_files(path: str) -> list[str]:
    """Input files under a file, folder (recursive) or glob, sorted; hidden and ``_`` files skipped.

    In a folder holding webdataset tars, the Parquet files beside them are img2dataset's
    per-shard metadata, not inputs, and are skipped.
    """
    fs, fs_path = fsspec.core.url_to_fs(path)
    if any(ch in fs_path for ch in "*?["):
        found = fs.glob(fs_path)
    elif fs.isdir(fs_path):
        found = fs.find(fs_path)
    elif fs.exists(fs_path):
        found = [fs_path]
    else:
        raise InputError(f"no such input file, folder or glob: {path}")
    found = [p for p in found if not p.rsplit("/", 1)[-1].startswith((".", "_"))]
    found = [p for p in found if _suffix(p) in (*TABLE_SUFFIXES, ".tar")]
    tar_dirs = {p.rsplit("/", 1)[0] for p in found if _suffix(p) == ".tar"}
    found = [p for p in found if not (_suffix(p) == ".parquet" and p.rsplit("/", 1)[0] in tar_dirs)]
    if not found:
        raise InputError(f"no input files ({', '.join((*TABLE_SUFFIXES, '.tar'))}) under {path}")
    return sorted(fs.unstrip_protocol(p) if "://" in path else p for p in found)


def _image_column(names: list[str]) -> str | None:
    return next((c for c in IMAGE_COLUMNS if c in names), None)


def file_format(path: str, config: InputConfig) -> str:
    """``img2dataset`` (image bytes inside) or ``table`` (urls to download)."""
    if config.input_format != "auto":
        return config.input_format
    if _suffix(path) == ".tar":
        return "img2dataset"
    if _suffix(path) == ".parquet":
        with fsspec.open(path, "rb") as handle:
            schema = pq.read_schema(handle)
        column = _image_column(schema.names)
        if column and pa.types.is_binary(schema.field(column).type):
            return "img2dataset"
    return "table"


def keep_column_fields(path: str, config: InputConfig) -> list[pa.Field]:
    """Arrow fields of ``--keep-columns`` (Parquet keeps its types; text formats give strings)."""
    extra = [c for c in config.keep_columns if c not in SHARD_PASSTHROUGH]
    if _suffix(path) != ".parquet":
        return [pa.field(name, pa.string()) for name in extra]
    with fsspec.open(path, "rb") as handle:
        schema = pq.read_schema(handle)
    missing = [c for c in extra if c not in schema.names]
    if missing:
        raise InputError(f"{path}: no column(s) {missing} to keep; the file has {schema.names}")
    return [schema.field(name) for name in extra]


def _text(value: Any) -> Any:
    """Text-format pass-through values: strings stay, anything else becomes its JSON text."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _to_row(record: dict, index: int, path: str, config: InputConfig, fmt: str, typed: bool) -> InputRow:
    key_column = config.key_column or ("key" if "key" in record else None)
    key = (
        str(record[key_column])
        if key_column and record.get(key_column) is not None
        else f"{_stem(path)}-{index:09d}"
    )
    caption = record.get(config.caption_column, record.get("txt") if fmt == "img2dataset" else None)
    url = record.get(config.url_column)
    fields, reject = {}, None
    for name, kind in SHARD_PASSTHROUGH.items():
        if record.get(name) not in (None, ""):
            try:
                fields[name] = kind(record[name])
            except (TypeError, ValueError):
                reject = (
                    "bad_input_row",
                    f"column {name!r} should hold a {kind.__name__}, got {record[name]!r}",
                )
    for name in config.keep_columns:
        if name not in SHARD_PASSTHROUGH:
            if name not in record:
                raise InputError(f"{path}: no column {name!r} to keep; the row has {sorted(record)}")
            fields[name] = record[name] if typed else _text(record[name])
    image = None
    if config.image_path_column:
        image, error = _read_image_file(path, record.get(config.image_path_column))
        if error and reject is None:
            reject = ("missing_image_file", error)
    elif fmt == "img2dataset":
        image = record.get(_image_column(list(record)) or "")
        if image is None and reject is None:
            reject = (
                "no_image_in_source",
                str(record.get("error_message") or "the input row holds no image bytes"),
            )
    elif not url and reject is None:
        reject = ("missing_url", f"no value in column {config.url_column!r}")
    size = (record.get("original_width"), record.get("original_height"))
    return InputRow(
        key=key,
        url=url,
        caption=caption,
        source=path,
        image=image,
        original_size=size if all(isinstance(v, int) for v in size) else None,
        sha256=record.get("sha256") if image is not None else None,
        fields=fields,
        reject=reject,
    )


def _read_image_file(table_path: str, image_path: str | None) -> tuple[bytes | None, str | None]:
    if not image_path:
        return None, "no image path"
    if "://" not in image_path and not image_path.startswith("/"):
        image_path = f"{table_path.rsplit('/', 1)[0]}/{image_path}" if "/" in table_path else image_path
    try:
        with fsspec.open(image_path, "rb") as handle:
            return handle.read(), None
    except OSError as err:
        return None, f"cannot read {image_path}: {err}"


def _check_columns(path: str, names: list[str], config: InputConfig, fmt: str) -> None:
    needed = [config.caption_column]
    if fmt != "img2dataset":
        needed.append(config.image_path_column or config.url_column)
    if fmt == "img2dataset" and "txt" in names:
        needed = []
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(
            f"{path}: no column(s) {missing}; the file has {names}. "
            "Name the right ones with --url-column / --caption-column"
        )


def _read_parquet(path: str, config: InputConfig, fmt: str) -> Iterator[InputRow]:
    with fsspec.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        _check_columns(path, names, config, fmt)
        index = 0
        for batch in parquet.iter_batches(batch_size=config.batch_rows):
            for record in batch.to_pylist():
                yield _to_row(record, index, path, config, fmt, typed=True)
                index += 1


def _read_delimited(path: str, config: InputConfig, delimiter: str) -> Iterator[InputRow]:
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        _check_columns(path, list(reader.fieldnames or []), config, "table")
        for index, record in enumerate(reader):
            yield _to_row(record, index, path, config, "table", typed=False)


def _read_jsonl(path: str, config: InputConfig) -> Iterator[InputRow]:
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as handle:
        index = 0
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            except ValueError as err:
                key = f"{_stem(path)}-{index:09d}"
                yield InputRow(key, None, None, path, reject=("bad_input_row", f"line {index + 1}: {err}"))
            else:
                yield _to_row(record, index, path, config, "table", typed=False)
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
            stem, _, ext = name.partition(".")
            if key is not None and stem != key:
                yield key, parts
                parts = {}
            key = stem
            parts[ext.lower()] = tar.extractfile(member).read()
        if key is not None:
            yield key, parts


def _read_tar(path: str, config: InputConfig) -> Iterator[InputRow]:
    for index, (key, parts) in enumerate(_tar_samples(path)):
        meta = json.loads(parts["json"]) if "json" in parts else {}
        record = {**meta, "key": meta.get("key", key)}
        if "txt" in parts:
            record["txt"] = parts["txt"].decode("utf-8")
        image_ext = _image_column(list(parts))
        record[image_ext or "jpg"] = parts.get(image_ext) if image_ext else None
        yield _to_row(record, index, path, config, "img2dataset", typed=False)


def read_file(path: str, config: InputConfig) -> Iterator[InputRow]:
    """Every row of one input file, streamed."""
    fmt, suffix = file_format(path, config), _suffix(path)
    if suffix == ".parquet":
        return _read_parquet(path, config, fmt)
    if suffix == ".tar":
        return _read_tar(path, config)
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, config, "," if suffix == ".csv" else "\t")
    if suffix == ".jsonl":
        return _read_jsonl(path, config)
    raise InputError(
        f"{path}: unsupported input ({suffix or 'no suffix'}); expected {TABLE_SUFFIXES} or .tar"
    )


def read_retry_rows(rejects_path: str, reasons: frozenset[str]) -> Iterator[InputRow]:
    """Rows of a rejects file whose reason is in ``reasons`` (transient failures), to be tried again."""
    table = read_parquet(rejects_path, columns=["key", "url", "caption", "reason"])
    for record in table.to_pylist():
        if record["reason"] in reasons:
            yield InputRow(record["key"], record["url"], record["caption"], rejects_path)
