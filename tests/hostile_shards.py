"""Hostile shards for the shard tools: each is a real file that a careless writer or a hostile source could produce.

Every builder takes a folder, writes one ``.parquet`` file into it and returns the file's path. The
good rows come from ``shard_factory``; each builder breaks one thing.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from shard_factory import default_samples, shard_row, write_shard

from grit_pipeline.schemas import SHARD_SCHEMA

HUGE_SIDE = 12_000  # 12,000 x 12,000 = 144 megapixels, the image of issue 15 item 8


def _rows(n: int = 2) -> list[dict]:
    return [shard_row(s) for s in default_samples(n)]


def _write_table(path: Path, table: pa.Table) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return str(path)


def wrong_types(folder: Path) -> str:
    """Declares shard/1, but ``caption`` holds numbers and ``noun_chunks`` holds text."""
    table = pa.Table.from_pylist(_rows(), schema=SHARD_SCHEMA)
    table = table.set_column(table.schema.get_field_index("caption"), "caption", pa.array([1, 2], pa.int64()))
    index = table.schema.get_field_index("noun_chunks")
    return _write_table(
        folder / "wrong_types.parquet", table.set_column(index, "noun_chunks", pa.array(["x", "y"]))
    )


def _with_first_span(folder: Path, name: str, values: list[float]) -> str:
    rows = _rows()
    for column in ("noun_chunks", "ref_exps"):
        rows[0][column] = [values, *rows[0][column][1:]]
    return write_shard(str(folder / f"{name}.parquet"), rows)


def inverted_box(folder: Path) -> str:
    """A box whose x_min is right of its x_max (and y_min below y_max)."""
    return _with_first_span(folder, "inverted_box", [0.0, 12.0, 0.9, 0.8, 0.1, 0.2, 0.9])


def nan_box(folder: Path) -> str:
    return _with_first_span(folder, "nan_box", [0.0, 12.0, math.nan, 0.1, 0.5, 0.5, 0.9])


def truncated(folder: Path) -> str:
    """A good shard cut in half, as a killed copy leaves it."""
    path = Path(write_shard(str(folder / "truncated.parquet"), _rows()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def not_parquet(folder: Path) -> str:
    path = folder / "not_parquet.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("key,caption\nk,a dog\n")
    return str(path)


def missing_columns(folder: Path) -> str:
    """Declares shard/1 but has neither ``caption`` nor ``ref_exps``."""
    table = pa.Table.from_pylist(_rows(), schema=SHARD_SCHEMA).drop_columns(["caption", "ref_exps"])
    return _write_table(folder / "missing_columns.parquet", table)


def huge_png(side: int = HUGE_SIDE) -> bytes:
    """A real, decodable grey PNG of ``side`` x ``side`` pixels, a few hundred kilobytes (all zeros)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, parts, row = zlib.compressobj(9), [], bytes(side + 1)  # filter byte 0, then the pixels
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


def huge_image(folder: Path) -> str:
    """A row whose image bytes decode to 144 megapixels (over the build's 50-megapixel limit)."""
    rows = _rows()
    rows[0].update(
        image=huge_png(), image_width=HUGE_SIDE, image_height=HUGE_SIDE, width=HUGE_SIDE, height=HUGE_SIDE
    )
    return write_shard(str(folder / "huge_image.parquet"), rows)


HOSTILE: dict[str, Callable[[Path], str]] = {
    "wrong_types": wrong_types,
    "inverted_box": inverted_box,
    "nan_box": nan_box,
    "truncated": truncated,
    "not_parquet": not_parquet,
    "missing_columns": missing_columns,
    "huge_image": huge_image,
}
