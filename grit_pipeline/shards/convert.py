"""`grit convert`: shards to the Kosmos-2 TSV layout, webdataset tars, a Hugging Face dataset or JSON lines.

File formats write one output file per input shard (``<shard>.tsv``, ``.tar``, ``.jsonl``) into
``--out``; ``hf-dataset`` writes one ``datasets`` dataset (``Dataset.save_to_disk``). Rows a format
cannot carry (the TSV and webdataset need image bytes) are skipped and counted by reason.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from grit_pipeline.cli import CommandError
from grit_pipeline.shards import formats
from grit_pipeline.shards.common import (
    add_path_argument,
    iter_tables,
    output_names,
    prepare_output_dir,
    resolve_files,
    table_rows,
)

FORMATS = ("kosmos2-tsv", "webdataset", "hf-dataset", "jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_path_argument(parser)
    parser.add_argument("--to", required=True, choices=FORMATS, help="the output format")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder, new or empty (any fsspec URL)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a folder that already holds files"
    )
    parser.add_argument(
        "--include-images",
        action="store_true",
        help="jsonl: embed image bytes as base64 (default: size only)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


@contextmanager
def _atomic(fs, path: str, mode: str):
    """Write under a hidden temporary name, then rename: no half-written file under the final name."""
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open(tmp, mode) as handle:
            yield handle
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _lines(rows: Iterable[dict], to_line: Callable[[dict], str], skipped: Counter) -> Iterator[str]:
    for row in rows:
        try:
            yield to_line(row) + "\n"
        except formats.Skip as skip:
            skipped[str(skip)] += 1


def _write_text(fs, path: str, rows: Iterable[dict], to_line, skipped: Counter) -> int:
    written = 0
    with _atomic(fs, path, "wb") as handle:
        for line in _lines(rows, to_line, skipped):
            handle.write(line.encode("utf-8"))
            written += 1
    return written


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_tar(fs, path: str, rows: Iterable[dict], skipped: Counter) -> int:
    """A webdataset shard: a plain tar of ``KEY.jpg``/``KEY.png`` and ``KEY.json`` members, in order.

    Written with ``tarfile`` rather than webdataset's TarWriter, whose import pulls in torch.
    """
    written = 0
    with _atomic(fs, path, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
        for row in rows:
            try:
                sample = formats.webdataset_sample(row)
            except formats.Skip as skip:
                skipped[str(skip)] += 1
                continue
            key = sample.pop("__key__")
            for extension, value in sample.items():
                data = json.dumps(value, ensure_ascii=False).encode() if extension == "json" else value
                _add_member(tar, f"{key}.{extension}", data)
            written += 1
    return written


def convert_files(
    files: list[str], to: str, out: str, include_images: bool, quiet: bool
) -> tuple[int, Counter]:
    """Write one output file per shard; returns (rows written, rows skipped by reason)."""
    fs, root = prepare_output_dir(out, overwrite=True)
    suffix = {"kosmos2-tsv": ".tsv", "webdataset": ".tar", "jsonl": ".jsonl"}[to]
    names = dict(zip(files, output_names(files, suffix)))
    written, skipped = 0, Counter()
    for shard, table in iter_tables(files, desc=f"convert to {to}", quiet=quiet):
        rows, target = table_rows(table), f"{root}/{names[shard]}"
        if to == "webdataset":
            written += _write_tar(fs, target, rows, skipped)
        elif to == "kosmos2-tsv":
            written += _write_text(fs, target, rows, formats.kosmos2_tsv_line, skipped)
        else:
            written += _write_text(fs, target, rows, lambda r: formats.jsonl_line(r, include_images), skipped)
    return written, skipped


def run(args: argparse.Namespace) -> int:
    files = resolve_files(args.path)
    prepare_output_dir(args.out, args.overwrite)  # refuse a non-empty folder before any work
    if args.to == "hf-dataset":
        from grit_pipeline.shards.hf_export import save_hf_dataset

        written, skipped = save_hf_dataset(files, args.out, args.quiet), Counter()
    else:
        written, skipped = convert_files(files, args.to, args.out, args.include_images, args.quiet)
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    summary = f"{written:,} rows written to {args.out} ({args.to})"
    print(summary + (f"; skipped {detail}" if detail else ""), file=sys.stderr)
    if written == 0:
        raise CommandError(f"nothing converted: every row was skipped ({detail})")
    return 0
