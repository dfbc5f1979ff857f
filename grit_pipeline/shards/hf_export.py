"""Shards -> one Hugging Face ``datasets`` dataset on disk (``load_from_disk`` reads it back).

The columns and types are the shards' (v1 plus any pass-through columns of the first shard);
``image`` becomes a ``datasets.Image`` feature, so rows load with a decoded PIL image.
Rows stream through ``Dataset.from_generator`` into a temporary cache, so memory stays flat. Rows with
problems (``guard``: broken spans, images over the pixel limit) are reported and left out.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pyarrow as pa

from grit_pipeline.shards.common import read_table, table_rows
from grit_pipeline.shards.guard import ProblemLog


def _features(first_shard: str):
    import datasets

    schema = read_table(first_shard).schema.remove_metadata()  # v1 columns, then the file's extra ones
    features = datasets.Features.from_arrow_schema(schema)
    features["image"] = datasets.Image()
    return features


def _rows(files: list[str], names: tuple[str, ...], log: ProblemLog, max_pixels: int) -> Iterator[dict]:
    for path in files:
        table = read_table(path)
        for row in table_rows(table.filter(pa.array(log.good_rows(path, table, max_pixels=max_pixels)))):
            image = row.get("image")
            row["image"] = {"bytes": image, "path": None} if image is not None else None
            yield {name: row.get(name) for name in names}  # later shards: missing extras are None


def save_hf_dataset(files: list[str], out: str, quiet: bool, log: ProblemLog, max_pixels: int) -> int:
    """Write every row under ``files`` as one dataset to ``out``; returns the number of rows."""
    import datasets

    # gen_kwargs: datasets shards over lists, so `files` is the one list and the column names a tuple.
    if quiet:
        datasets.disable_progress_bars()
    features = _features(files[0])
    cache_dir = tempfile.mkdtemp(prefix="grit-hf-")
    try:
        dataset = datasets.Dataset.from_generator(
            _rows,
            features=features,
            cache_dir=cache_dir,
            gen_kwargs={"files": files, "names": tuple(features), "log": log, "max_pixels": max_pixels},
        )
        dataset.save_to_disk(out)
        return dataset.num_rows
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
