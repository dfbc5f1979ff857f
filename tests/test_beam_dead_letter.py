"""No row fails a bundle: an exception in any per-row step rejects that row, and the job completes.

Each case makes one stage's real code raise on one chosen row ("poison"), by replacing the library
function that stage calls with one that raises for that row and otherwise calls the original (fault
injection: nothing in the real code raises on demand). The build runs on Beam's in-process local
runner, where the replacement is seen by the DoFns; without the guards each case fails the bundle,
so the job and ``run`` (exit 1).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.schemas import list_shard_files, read_shard
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

POISON = "poison"
COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--progress-interval", "0"]


class Injected(RuntimeError):
    pass


def raising(original, is_poison):
    def replacement(*args, **kwargs):
        if is_poison(args, kwargs):
            raise Injected(f"{POISON} row reached {original.__name__}")
        return original(*args, **kwargs)

    replacement.__name__ = original.__name__
    return replacement


def _mentions_poison(value) -> bool:
    if isinstance(value, str):
        return POISON in value
    if isinstance(value, (list, tuple)):
        return any(_mentions_poison(v) for v in value)
    if isinstance(value, dict):
        return any(_mentions_poison(v) for v in value.values())
    caption = getattr(value, "caption", None)  # a grounding request, a parsed caption
    return isinstance(caption, str) and POISON in caption


def poisoned(args, kwargs) -> bool:
    return any(_mentions_poison(v) for v in (*args, *kwargs.values()))


def inject_read(monkeypatch):
    from grit_pipeline.inputs import rows

    monkeypatch.setattr(rows, "_to_row", raising(rows._to_row, poisoned))


def inject_parse(monkeypatch):
    from grit_pipeline.text import TextStage

    monkeypatch.setattr(TextStage, "parse", raising(TextStage.parse, poisoned))


def inject_fetch(monkeypatch):
    from grit_pipeline.fetch import pool

    monkeypatch.setattr(
        pool, "download_one", raising(pool.download_one, lambda a, k: a[0].endswith(f"/{POISON}.jpg"))
    )


def inject_ground(monkeypatch):
    from grit_pipeline.grounding.hf_backend import HFDetector

    monkeypatch.setattr(HFDetector, "ground", raising(HFDetector.ground, poisoned))


def inject_assemble(monkeypatch):
    from grit_pipeline.beam_jobs import ground

    monkeypatch.setattr(ground, "assemble_spans", raising(ground.assemble_spans, poisoned))


# stage -> (how to make it raise, the reject reason it must give)
CASES = {
    "read": (inject_read, "unexpected_error"),
    "parse": (inject_parse, "unexpected_error"),
    "fetch": (inject_fetch, "unexpected_error"),
    "ground": (inject_ground, "grounding_error"),
    "assemble": (inject_assemble, "unexpected_error"),
}


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    """Four good rows and the poison row (a good image and caption: only the injection rejects it)."""
    root = tmp_path_factory.mktemp("dead-letter")
    with LoopbackServer() as server:
        urls = [
            server.add(f"/{i}.jpg", Route(jpeg_bytes(96 + 8 * i, 80, (40 * i, 90, 200)))) for i in range(4)
        ]
        urls.append(server.add(f"/{POISON}.jpg", Route(jpeg_bytes(100, 84, (200, 40, 40)))))
        captions = [f"a blue square number {i} on a grey wall" for i in range(4)]
        captions.append(f"a red {POISON} square on a grey wall")
        keys = [f"k{i}" for i in range(4)] + [POISON]
        pq.write_table(pa.table({"key": keys, "url": urls, "caption": captions}), root / "in.parquet")
        yield root


@pytest.mark.parametrize("stage", sorted(CASES))
def test_a_row_that_makes_a_stage_raise_is_rejected_and_the_job_completes(
    stage, job_input, tmp_path, monkeypatch
):
    inject, reason = CASES[stage]
    inject(monkeypatch)
    out = tmp_path / "out"
    assert run(["--input", str(job_input / "in.parquet"), "--output", str(out), *COMMON]) == 0
    counts = load_manifest(str(out))["counts"]
    assert counts["input"] == 5 == counts["accepted"] + counts["rejected"]
    rejects = {
        r["key"]: r for p in sorted((out / "rejects").glob("*.parquet")) for r in pq.read_table(p).to_pylist()
    }
    key = (
        POISON if stage != "read" else "in-000000004"
    )  # the read stage names a row it could not build by position
    assert (rejects[key]["stage"], rejects[key]["reason"]) == (stage, reason)
    assert f"Injected: {POISON} row reached" in rejects[key]["error"]
    accepted = {r["key"] for p in list_shard_files(str(out / "shards")) for r in read_shard(p).to_pylist()}
    assert POISON not in accepted
    assert accepted | set(rejects) == {"k0", "k1", "k2", "k3", key}
