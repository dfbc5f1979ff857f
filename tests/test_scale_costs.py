"""Costs that must stay flat at 100 M rows (issue 18, item 5), measured on counting fsspec file systems.

(a) committed keys/URLs/hashes are read with column projection: the bytes fetched from a committed
shard of realistic size (300 rows of ~50 kB JPEGs) stay under 2 % of it; (b) ``--dedup sha256``
shuffles (hash, key) pairs, never image bytes; (c) the commit's existence checks are listings, not
one request per file; (d) the sealed list is written in parts, not as one element.

The counting file systems are fsspec's in-memory one with counters: an object store itself is not
needed to count what a reader asks of it (the emulator tests, tests/test_objstore.py, run the
same code against gs:// and s3://).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections import Counter
from pathlib import Path

import apache_beam as beam
import fsspec
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image
from shard_factory import default_samples, shard_row, write_shard

from grit_pipeline.beam_jobs import dedup, job, run
from grit_pipeline.beam_jobs.commit import SEAL_PARTS, commit, sealed_items
from grit_pipeline.beam_jobs.dedup import ColumnValuesFn, Deduplicate
from grit_pipeline.beam_jobs.output_dir import RunPlan, load_manifest
from grit_pipeline.beam_jobs.records import FileRead, Row, StagedFile
from grit_pipeline.fetch.results import FetchedImage
from grit_pipeline.inputs import InputRow
from grit_pipeline.schemas import SHARD_SCHEMA, write_table

ROWS, IMAGE_SIDE = 300, 200  # a 200x200 noise JPEG at quality 95 is about 50 kB


class ReadCountingFileSystem(MemoryFileSystem):
    """In-memory files; ``read_bytes`` sums every byte handed out by open() handles and cat_file
    (cat_ranges and cat go through cat_file), i.e. every byte a reader fetched."""

    protocol = ("readcount",)
    read_bytes = 0

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("readcount://"))

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start, end, **kwargs)
        ReadCountingFileSystem.read_bytes += len(data)
        return data

    def _open(self, path, mode="rb", **kwargs):
        handle = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read, readinto = handle.read, handle.readinto

            def counted_read(*args):
                data = read(*args)
                ReadCountingFileSystem.read_bytes += len(data)
                return data

            def counted_readinto(buffer):
                count = readinto(buffer)
                ReadCountingFileSystem.read_bytes += count or 0
                return count

            handle.read, handle.readinto = counted_read, counted_readinto
        return handle


class CallCountingFileSystem(MemoryFileSystem):
    """In-memory files counting the calls a commit makes that cost one request each on a store."""

    protocol = ("callcount",)
    calls: Counter = Counter()  # noqa: RUF012  (one tally for every instance, as the store is)
    COUNTED = ("exists", "info", "isfile", "isdir", "size", "ls", "find", "glob", "cat_file", "_open")

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("callcount://"))


def _counted(name):
    real = getattr(MemoryFileSystem, name)

    def method(self, *args, **kwargs):
        CallCountingFileSystem.calls[name] += 1
        return real(self, *args, **kwargs)

    return method


for _name in CallCountingFileSystem.COUNTED:
    setattr(CallCountingFileSystem, _name, _counted(_name))
fsspec.register_implementation("readcount", ReadCountingFileSystem, clobber=True)
fsspec.register_implementation("callcount", CallCountingFileSystem, clobber=True)


def noise_jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def committed_shard(tmp_path_factory):
    """A 300-row shard with distinct ~50 kB images, on the read-counting file system."""
    rows = []
    for i, sample in enumerate(default_samples(ROWS)):
        image = noise_jpeg(i)
        rows.append({**shard_row(sample), "image": image, "sha256": hashlib.sha256(image).hexdigest()})
    local = write_shard(str(tmp_path_factory.mktemp("shard") / "shard-000000.parquet"), rows)
    url = "readcount://committed/shards/shard-000000.parquet"
    with open(local, "rb") as source:
        fsspec.filesystem("readcount").pipe_file(url, source.read())
    yield url, [r["key"] for r in rows], [r["url"] for r in rows], [r["sha256"] for r in rows]
    fsspec.filesystem("readcount").rm("/committed", recursive=True)


@pytest.mark.parametrize("column", ["key", "url", "sha256"])
def test_committed_values_fetch_under_2_percent_of_the_shard(committed_shard, column, capsys):
    url, keys, urls, hashes = committed_shard
    size = fsspec.filesystem("readcount").size(url)
    assert size > ROWS * 40_000  # the images make the shard realistic: about 50 kB a row
    ReadCountingFileSystem.read_bytes = 0
    values = [value for value, _ in ColumnValuesFn(column).process(url)]  # what dedup runs per shard
    fetched = ReadCountingFileSystem.read_bytes
    assert values == {"key": keys, "url": urls, "sha256": hashes}[column]
    with capsys.disabled():
        print(f"\ncommitted-{column} read: {fetched} bytes of {size} ({100 * fetched / size:.2f} %)")
    assert 0 < fetched < 0.02 * size

    ReadCountingFileSystem.read_bytes = 0  # the counter sees whole reads: without projection, all
    list(ColumnValuesFn("image").process(url))
    assert ReadCountingFileSystem.read_bytes > 0.9 * size


def _fetched_row(key: str, image: bytes) -> Row:
    fetched = FetchedImage(image, 150, 150, 150, 150, hashlib.sha256(image).hexdigest(), source=image)
    return Row(InputRow(key, f"http://127.0.0.1/{key}.jpg", "a cat", "a.csv"), fetched=fetched)


def _make_rows(seed: int) -> list[Row]:
    image_a, image_b = noise_jpeg(seed), noise_jpeg(seed + 1)  # ~50 kB each
    return [_fetched_row("k1", image_a), _fetched_row("k0", image_a), _fetched_row("k2", image_b)]


def test_dedup_by_hash_shuffles_hashes_and_keys_never_images(tmp_path, monkeypatch):
    """A real Beam pipeline (TestPipeline, the local runner): every element that enters a GroupByKey
    of ``DeduplicateByHash`` is recorded (its pickled size) on its way in, and every GroupByKey in
    the graph must be one of those watched; an element carrying a row's ~50 kB image fails it."""
    sizes_file = tmp_path / "sizes.txt"
    real_group = dedup._group_with_earlier
    watched = []

    def record(element):
        with open(sizes_file, "a") as out:
            out.write(f"{len(pickle.dumps(element))}\n")
        return element

    def watching_group(keyed, earlier, label):
        watched.append(f"{label}Group")
        return real_group(keyed | f"{label}Watch" >> beam.Map(record), earlier, label)

    monkeypatch.setattr(dedup, "_group_with_earlier", watching_group)

    class GroupByKeys(beam.pipeline.PipelineVisitor):
        labels: list = []  # noqa: RUF012

        def visit_transform(self, node):
            if isinstance(node.transform, beam.GroupByKey) and node.full_label.startswith("Dedup/"):
                self.labels.append(node.full_label.rsplit("/", 1)[-1])

    with BeamTestPipeline() as pipeline:
        rows = pipeline | beam.Create([0]) | beam.FlatMap(_make_rows)  # images made inside the job
        out = rows | "Dedup" >> Deduplicate("sha256")  # what --dedup sha256 applies
        assert_that(out.rows | "Kept" >> beam.Map(lambda r: r.key), equal_to(["k0", "k2"]), label="kept")
        rejected = out[dedup.REJECTS] | beam.Map(lambda r: (r["key"], r["reason"]))
        assert_that(rejected, equal_to([("k1", "duplicate")]), label="rejected")
        visitor = GroupByKeys()
        pipeline.visit(visitor)
    assert visitor.labels and set(visitor.labels) <= set(watched)
    sizes = [int(n) for n in sizes_file.read_text().split()]
    assert len(sizes) == 3 and max(sizes) < 1_000  # (hash, key) pairs: about 100 bytes, no 50 kB image


def staged_many(output: str, files: int) -> tuple[RunPlan, list]:
    """A finished run that wrote ``files`` shards in place (as on gs:// and s3://) and one input."""
    plan = RunPlan(output, "r1", 0.0, {"mode": "test"}, {"detector": "none"}, publish_by_rename=False)
    items: list = [FileRead("in.csv", files, 123)]
    for i in range(files):
        path = plan.new_file("shards")
        write_table([{"key": f"k{i}", "url": f"http://x/{i}.jpg", "caption": "a cat"}], path, SHARD_SCHEMA)
        items.append(StagedFile("shards", path, 1))
    return plan, items


def test_the_commits_existence_checks_do_not_grow_with_the_number_of_files():
    counts = {}
    for files in (10, 100):
        output = f"callcount://many-{files}"
        plan, items = staged_many(output, files)
        CallCountingFileSystem.calls.clear()
        commit(plan, items)
        counts[files] = dict(CallCountingFileSystem.calls)
        assert len(load_manifest(output)["files"]["shards"]) == files
        fsspec.filesystem("callcount").rm(f"/many-{files}", recursive=True)
    print(f"\ncommit calls, 10 files: {counts[10]}; 100 files: {counts[100]}")
    per_file = ("exists", "info", "isfile", "isdir", "size", "cat_file", "_open")
    assert {n: counts[100].get(n, 0) for n in per_file} == {n: counts[10].get(n, 0) for n in per_file}


def test_the_sealed_list_is_written_in_parts(tmp_path, monkeypatch):
    """A real build (the example, one row per shard): before its commit the staging folder holds
    ``sealed.json`` naming several part files, each with a share of the items, together all of them."""
    seen = {}
    real_commit = job.commit

    def inspecting_commit(plan, items):
        staging = Path(plan.staging)
        seen["sealed"] = json.loads((staging / "sealed.json").read_text())
        seen["parts"] = [json.loads((staging / p).read_text())["items"] for p in seen["sealed"]["parts"]]
        seen["items"] = sealed_items(plan)
        return real_commit(plan, items)

    monkeypatch.setattr(job, "commit", inspecting_commit)
    out = tmp_path / "out"
    assert run(["--example", "--output", str(out), "--detector", "tiny-random", "--rows-per-shard", "1"]) == 0
    assert "items" not in seen["sealed"]  # no single list of everything
    parts = seen["parts"]
    assert 1 < len(parts) <= SEAL_PARTS
    assert all(len(items) < len(seen["items"]) for items in parts)
    files = [i for items in parts for i in items if i["type"] in ("FileRead", "StagedFile")]
    wanted = [i for i in seen["items"] if isinstance(i, (FileRead, StagedFile))]
    assert len(files) == len(wanted) >= 6  # each read input and written file in exactly one part
    assert load_manifest(str(out))["counts"]["input"] == 5
