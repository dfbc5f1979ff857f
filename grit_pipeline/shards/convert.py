"""`grit convert`: shards to the Kosmos-2 TSV layout, webdataset tars, a Hugging Face dataset or JSON lines.

File formats write one output file per input shard (``<shard>.tsv``, ``.tar``, ``.jsonl``) into
``--out``; ``hf-dataset`` writes one ``datasets`` dataset (``Dataset.save_to_disk``). Rows a format
cannot carry (the TSV and webdataset need image bytes) are skipped and counted by reason.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from grit_pipeline.schemas import atomic_open
from grit_pipeline.shards import formats
from grit_pipeline.shards.checks import MAX_PIXELS, ImageProblem
from grit_pipeline.shards.common import (
    iter_tables,
    output_names,
    prepare_output_dir,
    table_rows,
)
from grit_pipeline.shards.guard import Problem, ProblemLog

FORMATS = ("kosmos2-tsv", "webdataset", "hf-dataset", "jsonl")


def _converted(rows: Iterable[tuple[int, dict]], convert: Callable, skipped: Counter, reject) -> Iterator:
    """What ``convert`` makes of each row: rows the format cannot carry are counted, bad images rejected."""
    for number, row in rows:
        try:
            yield convert(row)
        except formats.Skip as skip:
            skipped[str(skip)] += 1
        except ImageProblem as problem:
            reject(number, row, str(problem))


def _write_text(fs, path: str, lines: Iterable[str]) -> int:
    written = 0
    with atomic_open(fs, path, "wb") as handle:
        for line in lines:
            handle.write((line + "\n").encode("utf-8"))
            written += 1
    return written


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_tar(fs, path: str, samples: Iterable[dict]) -> int:
    """A webdataset shard: a plain tar of ``KEY.jpg``/``KEY.png`` and ``KEY.json`` members, in order.

    Written with ``tarfile`` rather than webdataset's TarWriter, whose import pulls in torch.
    """
    written = 0
    with atomic_open(fs, path, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for sample in samples:
            key = sample.pop("__key__")
            for extension, value in sample.items():
                data = json.dumps(value, ensure_ascii=False).encode() if extension == "json" else value
                _add_member(tar, f"{key}.{extension}", data)
            written += 1
    return written


def _converter(to: str, include_images: bool, max_pixels: int) -> Callable[[dict], object]:
    if to == "webdataset":
        return lambda row: formats.webdataset_sample(row, max_pixels)
    if to == "kosmos2-tsv":
        return lambda row: formats.kosmos2_tsv_line(row, max_pixels)
    return lambda row: formats.jsonl_line(row, include_images)


def convert_files(
    files: list[str],
    to: str,
    out: str,
    include_images: bool,
    quiet: bool,
    log: ProblemLog,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, Counter]:
    """Write one output file per shard; returns (rows written, rows skipped by reason).

    Rows with problems (``guard``) are reported to ``log`` and not written.
    """
    fs, root = prepare_output_dir(out, overwrite=True)
    suffix = {"kosmos2-tsv": ".tsv", "webdataset": ".tar", "jsonl": ".jsonl"}[to]
    names = dict(zip(files, output_names(files, suffix)))
    carries_images = to != "jsonl" or include_images
    convert, written, skipped = _converter(to, include_images, max_pixels), 0, Counter()
    for shard, table in iter_tables(files, desc=f"convert to {to}", quiet=quiet):
        good = log.good_rows(shard, table, max_pixels=max_pixels if carries_images else None)
        rows = zip(np.flatnonzero(good).tolist(), table_rows(table.filter(pa.array(good))))

        def reject(number: int, row: dict, message: str, shard: str = shard) -> None:
            log.report(Problem(shard, message, number, row.get("key")))

        items = _converted(rows, convert, skipped, reject)
        write = _write_tar if to == "webdataset" else _write_text
        written += write(fs, f"{root}/{names[shard]}", items)
    return written, skipped
