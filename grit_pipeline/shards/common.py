"""Helpers shared by the shard tools: finding shards, progress, output folders, JSON-safe rows."""

from __future__ import annotations

import base64
import math
import os
import sys
from collections.abc import Iterator

import fsspec
from tqdm import tqdm

from grit_pipeline.errors import CommandError
from grit_pipeline.filesystems import missing_file_system
from grit_pipeline.schemas import ShardFormatError, list_shard_files, read_parquet_metadata, read_shard
from grit_pipeline.shards.checks import MAX_PIXELS
from grit_pipeline.shards.guard import unreadable


def add_path_argument(parser) -> None:
    parser.add_argument(
        "path",
        metavar="PATH",
        help="a shard, a folder of shards or a glob; local or any fsspec URL (ours or GRIT-20M Parquet)",
    )


def add_max_pixels_argument(parser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        metavar="N",
        help=f"refuse to decode an image of more than N pixels (default {MAX_PIXELS:,}, the build's limit)",
    )


def resolve_files(path: str) -> list[str]:
    """The Parquet files under ``path`` (a build's committed ones); a CommandError when there are none."""
    problem = missing_file_system(path)
    if problem is not None:
        raise CommandError(problem)
    try:
        files = list_shard_files(path)
    except FileNotFoundError as err:
        raise CommandError(f"{err}; expected a .parquet file, a folder of them or a glob") from err
    if not files:
        raise CommandError(f"no .parquet files under {path!r}; expected GRIT shards (OUT/shards/*.parquet)")
    return files


def read_table(path: str, columns: list[str] | None = None):
    """One shard in the v1 layout; a file that is not a readable shard prints one line per defect, exit 2."""
    try:
        return read_shard(path, columns)
    except ShardFormatError as err:
        raise unreadable(err) from err


def count_rows(files: list[str]) -> int | None:
    """Total rows from the Parquet footers (cheap), or None when a footer cannot be read."""
    total = 0
    for path in files:
        try:
            total += read_parquet_metadata(path).num_rows
        except Exception:  # the real read reports the problem with its context
            return None
    return total


def progress(total: int | None, desc: str, quiet: bool = False) -> tqdm:
    """A row-progress bar on stderr; hidden with ``quiet`` (the tests, ``--quiet``)."""
    return tqdm(total=total, desc=desc, unit="row", file=sys.stderr, disable=quiet, leave=False, delay=0.5)


def iter_tables(files: list[str], columns: list[str] | None = None, desc: str = "", quiet: bool = False):
    """``(shard_path, table)`` per shard, advancing a row-progress bar as each shard is read."""
    bar = progress(count_rows(files), desc, quiet)
    try:
        for path in files:
            table = read_table(path, columns)
            yield path, table
            bar.update(table.num_rows)
    finally:
        bar.close()


def table_rows(table, batch_rows: int = 2048) -> Iterator[dict]:
    """The rows of a table as dicts, converted one batch at a time (image bytes included: bounded memory)."""
    for batch in table.to_batches(max_chunksize=batch_rows):
        yield from batch.to_pylist()


def emit(text: str) -> bool:
    """Print a line to stdout; False when the reader went away (``grit ... | head``), which is not an error."""
    try:
        print(text)
        return True
    except BrokenPipeError:
        # The Python docs' recipe: point stdout at devnull so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return False


def json_safe(value):
    """A value JSON can carry: bytes as base64 text, NaN/inf as None."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def row_without_image(row: dict) -> dict:
    """The row as JSON-ready values, its image bytes replaced by their size (``image_bytes``)."""
    out = {k: json_safe(v) for k, v in row.items() if k != "image"}
    image = row.get("image")
    out["image_bytes"] = len(image) if image is not None else None
    return out


def prepare_output_dir(out: str, overwrite: bool) -> tuple[fsspec.AbstractFileSystem, str]:
    """The output folder, created; a CommandError when it already holds files and ``overwrite`` is off."""
    fs, root = fsspec.core.url_to_fs(out)
    if fs.exists(root):
        if not fs.isdir(root):
            raise CommandError(f"--out {out!r} is a file; expected a folder (new or empty)")
        if fs.ls(root) and not overwrite:
            raise CommandError(f"--out {out!r} is not empty; choose a new folder or pass --overwrite")
    fs.makedirs(root, exist_ok=True)
    return fs, root.rstrip("/")


def output_names(files: list[str], suffix: str) -> list[str]:
    """One output file name per shard: the shard's stem plus ``suffix``, numbered where stems repeat."""
    stems = [f.rstrip("/").rsplit("/", 1)[-1].removesuffix(".parquet") for f in files]
    repeated = {s for s in stems if stems.count(s) > 1}
    return [f"{i:05d}-{s}{suffix}" if s in repeated else f"{s}{suffix}" for i, s in enumerate(stems)]
