"""The job's command line and runner recipes: options parse, the graph builds for Dataflow, Flink, Spark
and a portable job service with remote workers (no cloud project or cluster here), remote runners
refuse paths their workers cannot reach, DaskRunner is refused, and user errors are one line.
The end-to-end runs on real runners are in test_beam_runners_e2e.py."""

from __future__ import annotations

import argparse
import os
import pickle

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.job import PreparedRun, prepare_run
from grit_pipeline.beam_jobs.options import BEAM_ARGV, add_arguments, build_config
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.beam_jobs.runners import sdk_processes_on_this_machine, workers_on_this_machine
from grit_pipeline.cli import main as grit_main
from grit_pipeline.grounding.devices import usable_cores

RECIPES = {
    "dataflow": [
        "--runner", "DataflowRunner", "--project", "my-project-123", "--region", "us-central1",
        "--temp_location", "gs://my-bucket/tmp", "--extra_package", "dist/grit_pipeline-0.1.0-py3-none-any.whl",
        "--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "--machine_type", "g2-standard-8", "--device", "cuda",
    ],
    "flink": ["--runner", "FlinkRunner", "--flink_master", "flink-host:8081", "--environment_type", "DOCKER"],
    "spark": ["--runner", "SparkRunner", "--spark_master_url", "spark://spark-host:7077"],
    "portable": ["--runner", "PortableRunner", "--job_endpoint", "job-host:8099", "--environment_type", "DOCKER"],
}  # fmt: skip


class RemoteLikeFileSystem(MemoryFileSystem):
    """An in-memory file system under a protocol that is not this machine's (``remotetest://``).

    No object store can be reached from here; the recipes only need a path that a remote
    worker could resolve, which ``file://`` and ``memory://`` are not.
    """

    protocol = ("remotetest",)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("remotetest://"))


fsspec.register_implementation("remotetest", RemoteLikeFileSystem, clobber=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def remote_input():
    fs = fsspec.filesystem("remotetest")
    table = pa.table({"url": ["https://example.com/a.jpg"], "caption": ["a red car on a road"]})
    with fs.open("/recipes/in.parquet", "wb") as handle:
        pq.write_table(table, handle)
    yield "remotetest://recipes/in.parquet"
    fs.rm("/recipes", recursive=True)


@pytest.mark.parametrize("runner", sorted(RECIPES))
def test_runner_recipe_parses_and_builds_the_graph(runner, remote_input):
    argv = [
        "--input",
        remote_input,
        "--output",
        f"remotetest://recipes/out-{runner}",
        "--detector",
        "tiny-random",
    ]
    args = parse([*argv, *RECIPES[runner]])
    prepared = prepare_run(build_config(args), getattr(args, BEAM_ARGV))
    assert isinstance(prepared, PreparedRun) and not prepared.here
    assert type(prepared.pipeline.runner).__name__ == RECIPES[runner][1]
    proto = prepared.pipeline.to_runner_api()  # every DoFn pickled into the portable graph
    names = {t.unique_name for t in proto.components.transforms.values()}
    for stage in ("Read", "DedupByUrl", "Parse", "Fetch", "GroundAndAssemble", "Write/Seal"):
        assert stage in names
    assert prepared.plan.beam_options["runner"] == RECIPES[runner][1]
    # Object stores rename by copying: files are written under their final names (write once).
    assert not prepared.plan.publish_by_rename
    pickle.loads(pickle.dumps(prepared.plan))


@pytest.fixture
def real_input(tmp_path):
    """An input file that exists, so only the path refusal can stop the build."""
    path = tmp_path / "in.csv"
    path.write_text("url,caption\nhttps://example.com/a.jpg,a red car\n")
    return path


@pytest.mark.parametrize("spelling", ["plain", "file-url", "memory"])
def test_remote_runner_refuses_paths_its_workers_cannot_reach(spelling, real_input, tmp_path, capsys):
    out = {"plain": str(tmp_path / "out"), "file-url": f"file://{tmp_path}/out", "memory": "memory://out"}
    argv = ["--input", f"file://{real_input}", "--output", out[spelling], "--detector", "tiny-random"]
    assert run([*argv, *RECIPES["flink"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "a remote runner's workers cannot reach this machine's files" in err and "\n" not in err
    assert out[spelling] in err and str(real_input) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"])
def test_dask_runner_is_refused_in_one_line(name, real_input, tmp_path, capsys):
    argv = ["--input", str(real_input), "--output", str(tmp_path / "o"), "--runner", name]
    assert run([*argv, "--detector", "tiny-random"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("grit build: error: DaskRunner cannot run this job correctly") and "\n" not in err


PROCESS = ["--environment_type", "PROCESS", "--environment_config", "{}"]
SPARK = ["--runner", "SparkRunner", "--spark_master_url"]
FLINK = ["--runner", "FlinkRunner", "--flink_master"]
PORTABLE = ["--runner", "PortableRunner", "--job_endpoint"]
# argv -> (workers share this machine, SDK processes working at once on it), with 8 usable cores.
LOCALITY = {
    "in-process": ([], True, 1),
    "multi_threading": (["--direct_running_mode", "multi_threading", "--direct_num_workers", "4"], True, 1),
    "multi_processing": (["--direct_running_mode", "multi_processing", "--direct_num_workers", "3"], True, 3),
    "multi_processing, 0 workers": (["--direct_running_mode", "multi_processing", "--direct_num_workers", "0"], True, 8),
    "dotted DirectRunner": (["--runner", "apache_beam.runners.direct.DirectRunner"], True, 1),
    "embed, EXTERNAL": ([*PORTABLE, "embed", "--environment_type", "EXTERNAL"], True, 1),
    "embed, Docker by default": ([*PORTABLE, "embed"], False, None),
    "job service here, LOOPBACK": ([*PORTABLE, "localhost:8099", "--environment_type", "LOOPBACK"], True, 1),
    "job service here, PROCESS": ([*PORTABLE, "localhost:8099", *PROCESS], True, None),
    "job service elsewhere": ([*PORTABLE, "job-host:8099", *PROCESS], False, None),
    "Spark local[2], LOOPBACK": ([*SPARK, "local[2]"], True, 1),
    "Spark local[4], 2 SDK processes": ([*SPARK, "local[4]", *PROCESS, "--sdk_worker_parallelism", "2"], True, 2),
    "Spark local[2], auto SDK processes": ([*SPARK, "local[2]", *PROCESS, "--sdk_worker_parallelism", "0"], True, 2),
    "Spark local[*], auto SDK processes": ([*SPARK, "local[*]", *PROCESS, "--sdk_worker_parallelism", "0"], True, 7),
    "Spark local, 4 SDK processes": ([*SPARK, "local", *PROCESS, "--sdk_worker_parallelism", "4"], True, 1),
    "Spark local-cluster": ([*SPARK, "local-cluster[2,3,1024]", *PROCESS, "--sdk_worker_parallelism", "2"], True, 4),
    "Spark master here": ([*SPARK, "spark://localhost:7077", *PROCESS], True, None),
    "Spark master here, Docker by default": ([*SPARK, "spark://localhost:7077"], False, None),
    "Flink [local], LOOPBACK": ([*FLINK, "[local]"], True, 1),
    "Flink [auto], LOOPBACK": (["--runner", "FlinkRunner"], True, 1),
    "Flink [local], parallelism 2": ([*FLINK, "[local]", *PROCESS, "--parallelism", "2", "--sdk_worker_parallelism", "4"], True, 2),
    "Flink [auto], auto SDK processes": ([*FLINK, "[auto]", *PROCESS, "--sdk_worker_parallelism", "0"], True, 7),
    "Flink [local], Docker": ([*FLINK, "[local]", "--environment_type", "DOCKER"], False, None),
    "Flink session cluster here": ([*FLINK, "127.0.0.1:8081", *PROCESS], True, None),
    "Dataflow": (["--runner", "DataflowRunner"], False, None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LOCALITY))
def test_where_the_workers_run_and_how_many_sdk_processes_share_this_machine(case, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr("grit_pipeline.grounding.devices.usable_cores", lambda: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)  # Beam's own count for --direct_num_workers 0
    argv, here, processes = LOCALITY[case]
    options = PipelineOptions(argv)
    assert workers_on_this_machine(options) is here
    assert sdk_processes_on_this_machine(options) == processes


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


def test_option_defaults_are_the_dataclasses(tmp_path):
    from grit_pipeline.beam_jobs.config import BuildConfig
    from grit_pipeline.fetch import FetchConfig
    from grit_pipeline.grounding import DetectorConfig
    from grit_pipeline.inputs import InputConfig
    from grit_pipeline.text import TextConfig

    config = build_config(parse(["--input", "x.csv", "--output", str(tmp_path)]))
    # Only the torch pool is sized here, from the cores and local workers (worker_threads).
    cores = usable_cores()
    reference = BuildConfig(
        input_paths=("x.csv",), output=str(tmp_path), detector=DetectorConfig(threads=cores)
    )
    assert config == reference
    assert (config.input_options, config.fetch, config.text) == (InputConfig(), FetchConfig(), TextConfig())
    assert config.detector == DetectorConfig(threads=cores) and config.detector_fallback is None


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
