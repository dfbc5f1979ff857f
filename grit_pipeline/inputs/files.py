"""Input files before any row is read: listing, format, key prefixes, and the checks run before the job.

``check_input_files`` opens every file the way its reader will (decompression, Parquet footer,
CSV header) and checks the named columns, so an unreadable file or a wrong column name stops the
build with one line before anything runs, instead of a traceback from inside the pipeline.
"""

from __future__ import annotations

import csv
import hashlib
import lzma
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from grit_pipeline.inputs.config import (
    COMPRESSION_SUFFIXES,
    SHARD_PASSTHROUGH,
    TABLE_SUFFIXES,
    InputConfig,
    InputError,
)
from grit_pipeline.schemas.shard import image_column

CHECK_THREADS = 16  # files checked at once (remote stores answer each open in tens of ms)
# Exceptions that mean "this file is not what its name says" (not gzip, not Parquet, truncated).
UNREADABLE = (OSError, EOFError, zlib.error, lzma.LZMAError, pa.ArrowException, tarfile.TarError, csv.Error)


def suffix(path: str) -> str:
    """The format suffix, compression left out: ``a/b.tsv.gz`` -> ``.tsv``."""
    name = path.rsplit("/", 1)[-1].lower()
    for compression in COMPRESSION_SUFFIXES:
        if name.endswith(compression):
            name = name[: -len(compression)]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def stem(path: str) -> str:
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
    found = [p for p in found if suffix(p) in (*TABLE_SUFFIXES, ".tar")]
    tar_dirs = {p.rsplit("/", 1)[0] for p in found if suffix(p) == ".tar"}
    found = [p for p in found if not (suffix(p) == ".parquet" and p.rsplit("/", 1)[0] in tar_dirs)]
    if not found:
        raise InputError(f"no input files ({', '.join((*TABLE_SUFFIXES, '.tar'))}) under {path}")
    return sorted(fs.unstrip_protocol(p) if "://" in path else p for p in found)


def key_prefixes(files: list[str]) -> dict[str, str]:
    """The prefix of generated keys (``PREFIX-ROW``) per file: its stem, made unique when stems repeat.

    >>> key_prefixes(["a/part-0.csv", "b/part-0.csv", "b/other.csv"])["b/other.csv"]
    'other'
    >>> len(set(key_prefixes(["a/part-0.csv", "b/part-0.csv"]).values()))
    2
    """
    stems = [stem(f) for f in files]
    return {
        f: s if stems.count(s) == 1 else f"{s}-{hashlib.sha1(f.encode()).hexdigest()[:8]}"
        for f, s in zip(files, stems)
    }


def parquet_schema(path: str) -> pa.Schema:
    with fsspec.open(path, "rb") as handle:
        return pq.read_schema(handle)


def file_format(path: str, config: InputConfig) -> str:
    """``img2dataset`` (image bytes inside) or ``table`` (urls to download)."""
    if config.input_format != "auto":
        return config.input_format
    if suffix(path) == ".tar":
        return "img2dataset"
    if suffix(path) == ".parquet":
        schema = parquet_schema(path)
        column = image_column(schema.names)
        if column and pa.types.is_binary(schema.field(column).type):
            return "img2dataset"
    return "table"


def keep_column_fields(path: str, config: InputConfig) -> list[pa.Field]:
    """Arrow fields of ``--keep-columns`` (Parquet keeps its types; text formats give strings)."""
    extra = [c for c in config.keep_columns if c not in SHARD_PASSTHROUGH]
    if suffix(path) != ".parquet":
        return [pa.field(name, pa.string()) for name in extra]
    schema = parquet_schema(path)
    missing = [c for c in extra if c not in schema.names]
    if missing:
        raise InputError(f"{path}: no column(s) {missing} to keep; the file has {schema.names}")
    return [schema.field(name) for name in extra]


def column_problem(path: str, names: list[str], config: InputConfig, fmt: str) -> str | None:
    """What is missing from a file's columns, as one sentence, or None."""
    needed = [config.caption_column]
    if fmt != "img2dataset":
        needed.append(config.image_path_column or config.url_column)
    if fmt == "img2dataset" and "txt" in names:
        needed = []
    needed += [c for c in (config.key_column, *config.keep_columns) if c and c not in SHARD_PASSTHROUGH]
    missing = [c for c in needed if c not in names]
    if not missing:
        return None
    return (
        f"{path}: no column(s) {missing}; the file has {names}. "
        "Name the right ones with --url-column / --caption-column / --key-column / --keep-columns"
    )


def _header(path: str) -> list[str]:
    delimiter = "," if suffix(path) == ".csv" else "\t"
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f, delimiter=delimiter), None)
    if not header:
        raise InputError(
            f"{path} is empty: a CSV/TSV input needs a header line naming its columns (e.g. url,caption)"
        )
    return header


def _check_one(path: str, config: InputConfig) -> str | None:
    """Why ``path`` cannot be read as its name says, or None."""
    kind = suffix(path)
    try:
        if kind == ".parquet":
            names = parquet_schema(path).names
        elif kind in (".csv", ".tsv"):
            names = _header(path)
        else:  # JSON lines name their columns per row; tars per sample: open and read a little
            with fsspec.open(path, "rb", compression="infer") as handle:
                handle.read(1 << 16)
            return None
    except InputError as err:
        return str(err)
    except UNREADABLE as err:
        return f"{path} cannot be read as a {kind.lstrip('.')} file{_compression(path)}: {err}"
    return column_problem(path, names, config, file_format(path, config))


def _compression(path: str) -> str:
    name = path.lower()
    return next((f" ({c.lstrip('.')}-compressed)" for c in COMPRESSION_SUFFIXES if name.endswith(c)), "")


def check_input_files(files: list[str], config: InputConfig) -> None:
    """Raise ``InputError`` (one line) when any file cannot be read or lacks a named column."""
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        problems = [p for p in pool.map(lambda f: _check_one(f, config), files) if p]
    if problems:
        more = f" (and {len(problems) - 1} more file(s) like it)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)
