"""The job's command line and runner recipes: options parse, the graph builds for Dataflow, Flink and
Spark as far as this machine allows (no cloud project, no Java job server), the bundled example runs,
and user errors are one line."""

from __future__ import annotations

import argparse
import os
import pickle

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.job import PreparedRun, prepare_run
from grit_pipeline.beam_jobs.options import add_arguments
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.cli import main as grit_main

RECIPES = {
    "dataflow": [
        "--runner", "DataflowRunner", "--project", "my-project-123", "--region", "us-central1",
        "--temp_location", "gs://my-bucket/tmp", "--extra_package", "dist/grit_pipeline-0.1.0-py3-none-any.whl",
        "--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "--machine_type", "g2-standard-8", "--device", "cuda",
    ],
    "flink": ["--runner", "FlinkRunner", "--flink_master", "flink-host:8081", "--environment_type", "LOOPBACK"],
    "spark": ["--runner", "SparkRunner", "--spark_master_url", "spark://spark-host:7077", "--environment_type", "LOOPBACK"],
    "portable": ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099", "--environment_type", "DOCKER"],
}  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def remote_input():
    """A url table on fsspec's in-memory filesystem: a path with a protocol, as a remote runner needs."""
    fs = fsspec.filesystem("memory")
    table = pa.table({"url": ["https://example.com/a.jpg"], "caption": ["a red car on a road"]})
    with fs.open("/recipes/in.parquet", "wb") as handle:
        pq.write_table(table, handle)
    yield "memory://recipes/in.parquet"
    fs.rm("/recipes", recursive=True)


@pytest.mark.parametrize("runner", sorted(RECIPES))
def test_runner_recipe_parses_and_builds_the_graph(runner, remote_input):
    argv = [
        "--input",
        remote_input,
        "--output",
        f"memory://recipes/out-{runner}",
        "--detector",
        "tiny-random",
    ]
    prepared = prepare_run(parse([*argv, *RECIPES[runner]]))
    assert isinstance(prepared, PreparedRun) and not prepared.local
    assert type(prepared.pipeline.runner).__name__ == RECIPES[runner][1]
    proto = prepared.pipeline.to_runner_api()  # every DoFn pickled into the portable graph
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in ("Read", "DedupByUrl", "Parse", "Fetch", "GroundAndAssemble", "Write/Commit"):
        assert stage in names
    assert prepared.plan.beam_options["runner"] == RECIPES[runner][1]
    pickle.loads(pickle.dumps(prepared.plan))


def test_remote_runner_refuses_local_paths(tmp_path):
    argv = ["--input", str(tmp_path / "x.csv"), "--output", str(tmp_path / "out"), *RECIPES["flink"]]
    assert run(argv) == 2


def test_unknown_flags_are_errors(capsys):
    with pytest.raises(SystemExit) as info:
        grit_main(["build", "--example", "--output", "x", "--runer", "DirectRunner"])
    assert info.value.code == 2
    assert "unrecognized arguments: --runer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grit_main(["build", "--example", "--output", "x", "--direct_running_mode", "multi_prosessing"])


def test_user_errors_are_one_line(tmp_path, capsys):
    assert grit_main(["build", "--example"]) == 2
    assert capsys.readouterr().err.strip() == "grit build: error: --output DIR is required"
    assert grit_main(["build", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grit build: error: no such input") and "\n" not in err


def test_example_offline_names_the_smoke_option_then_runs_with_it(tmp_path, capsys):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: the default detector cannot be downloaded
    out = str(tmp_path / "example")
    assert grit_main(["build", "--example", "--output", out]) == 2
    err = capsys.readouterr().err
    assert "--detector tiny-random" in err and "Traceback" not in err
    assert grit_main(["build", "--example", "--output", out, "--detector-fallback", "tiny-random"]) == 0
    manifest = load_manifest(out)
    assert manifest["provenance"]["detector"] == "tiny-random"
    assert manifest["counts"]["input"] == 5 == manifest["counts"]["accepted"] + manifest["counts"]["rejected"]
    assert manifest["counts"]["accepted"] >= 1
    # Overwrite mode replaces the build instead of adding to it.
    assert (
        grit_main(["build", "--example", "--output", out, "--detector", "tiny-random", "--mode", "overwrite"])
        == 0
    )
    assert len(load_manifest(out)["runs"]) == 1
