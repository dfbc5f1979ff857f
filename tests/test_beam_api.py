"""The Beam internals the job relies on, against the installed Beam: each check names what changed.

``beam_jobs/beam_api.py`` holds every private Beam name the package uses; ``beam_jobs/runners.py``
copies a few of Beam's own rules (which environment its runners pick, option defaults). A Beam
upgrade that moves any of them fails here, with the piece to look at, rather than as a wrong
thread count or a missing flag in a build.
"""

from __future__ import annotations

import argparse

import pytest

from grit_pipeline.beam_jobs import beam_api, runners


def changed(piece: str, detail: str) -> str:
    from apache_beam.version import __version__

    return (
        f"Beam {__version__} changed {piece} (beam_jobs/beam_api.py and runners.py were written "
        f"against Beam {beam_api.BEAM_VERSION_CHECKED}): {detail}"
    )


def options(argv: list[str]):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(argv)


def test_beams_argument_parser_and_option_declarations_are_where_beam_api_reads_them():
    from apache_beam.options import pipeline_options

    parser_class = getattr(pipeline_options, "_BeamArgumentParser", None)
    assert parser_class is not None, changed("_BeamArgumentParser", "pipeline_options no longer defines it")
    assert issubclass(parser_class, argparse.ArgumentParser), changed(
        "_BeamArgumentParser", "it is no longer an argparse.ArgumentParser"
    )
    classes = pipeline_options.PipelineOptions.__subclasses__()
    assert classes, changed("PipelineOptions.__subclasses__()", "no option classes are subclasses any more")
    missing = [cls.__name__ for cls in classes if not callable(getattr(cls, "_add_argparse_args", None))]
    assert not missing, changed("_add_argparse_args", f"not a classmethod of {', '.join(missing)}")
    assert isinstance(getattr(parser_class(), "_actions", None), list), changed(
        "argparse's _actions", "a parser no longer lists its actions there"
    )


# What `grit build` and runners.py read from Beam's options: each must still be declared.
READ_OPTIONS = (
    "--runner",
    "--direct_running_mode",
    "--direct_num_workers",
    "--job_endpoint",
    "--environment_type",
    "--environment_config",
    "--environment_cache_millis",
    "--sdk_worker_parallelism",
    "--spark_master_url",
    "--spark_job_server_jar",
    "--flink_master",
    "--flink_job_server_jar",
    "--parallelism",
    "--project",
    "--region",
)


def test_every_pipeline_option_runners_read_is_among_beams_declared_actions():
    actions = beam_api.beam_option_actions()
    assert all(isinstance(action, argparse.Action) for action in actions), changed(
        "_BeamArgumentParser._actions", "it holds something other than argparse actions"
    )
    declared = {s for action in actions for s in action.option_strings}
    missing = [name for name in READ_OPTIONS if name not in declared]
    assert not missing, changed("the pipeline options", f"{', '.join(missing)} no longer declared")
    mode = next(a for a in actions if "--direct_running_mode" in a.option_strings)
    assert set(mode.choices) == {"in_memory", "multi_threading", "multi_processing"}, changed(
        "--direct_running_mode", f"its choices are now {mode.choices}"
    )


def test_option_strings_reads_what_a_parser_declares():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", "-o")
    assert beam_api.option_strings(parser) == {"-h", "--help", "--output", "-o"}


def test_option_defaults_the_process_count_assumes():
    from apache_beam.options import pipeline_options as po

    given = options([])
    found = {
        "direct_running_mode": given.view_as(po.DirectOptions).direct_running_mode,
        "direct_num_workers": given.view_as(po.DirectOptions).direct_num_workers,
        "sdk_worker_parallelism": int(given.view_as(po.PortableOptions).sdk_worker_parallelism),
        "environment_type": given.view_as(po.PortableOptions).environment_type,
        "spark_master_url": given.view_as(po.SparkRunnerOptions).spark_master_url,
        "flink_master": given.view_as(po.FlinkRunnerOptions).flink_master,
        "parallelism": given.view_as(po.FlinkRunnerOptions).parallelism,
    }
    expected = {
        "direct_running_mode": "in_memory",
        "direct_num_workers": 1,
        "sdk_worker_parallelism": 1,
        "environment_type": None,
        "spark_master_url": "local[4]",
        "flink_master": "[auto]",
        "parallelism": -1,
    }
    differ = {name: value for name, value in found.items() if value != expected[name]}
    assert not differ, changed("option defaults", f"now {differ}, runners.py assumes {expected}")


def test_the_local_masters_are_beams_own():
    from apache_beam.runners.portability import flink_runner, spark_runner

    assert spark_runner.LOCAL_MASTER_PATTERN == runners.SPARK_LOCAL_MASTER, changed(
        "spark_runner.LOCAL_MASTER_PATTERN", repr(spark_runner.LOCAL_MASTER_PATTERN)
    )
    assert tuple(flink_runner.MAGIC_HOST_NAMES) == runners.FLINK_LOCAL_MASTERS, changed(
        "flink_runner.MAGIC_HOST_NAMES", repr(flink_runner.MAGIC_HOST_NAMES)
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--runner", "SparkRunner", "--spark_master_url", "local[2]"],
        ["--runner", "SparkRunner", "--spark_master_url", "local"],
        ["--runner", "SparkRunner", "--spark_master_url", "spark://localhost:7077"],
        ["--runner", "FlinkRunner", "--flink_master", "[local]"],
        ["--runner", "FlinkRunner"],
        ["--runner", "FlinkRunner", "--flink_master", "localhost:8081"],
        ["--runner", "PortableRunner", "--job_endpoint", "embed"],
        ["--runner", "SparkRunner", "--spark_master_url", "local[2]", "--environment_type", "PROCESS"],
    ],
    ids=lambda argv: " ".join(argv[1::2]),
)
def test_the_environment_runners_expects_is_the_one_beam_picks(argv):
    """runners.environment_type copies the choice Beam's runners make when none is given."""
    from apache_beam.runners.portability.flink_runner import FlinkRunner
    from apache_beam.runners.portability.portable_runner import PortableRunner
    from apache_beam.runners.portability.spark_runner import SparkRunner
    from apache_beam.transforms import environments

    kinds = {
        environments.DockerEnvironment: "DOCKER",
        environments.ProcessEnvironment: "PROCESS",
        environments.ExternalEnvironment: "EXTERNAL",
        environments.PythonLoopbackEnvironment: "LOOPBACK",
    }
    ours = runners.environment_type(options(argv))
    process = ["--environment_config", '{"command": "python"}']
    beam_options = options([*argv, *process] if "PROCESS" in argv else argv)
    runner = {"SparkRunner": SparkRunner, "FlinkRunner": FlinkRunner, "PortableRunner": PortableRunner}
    picked = type(runner[argv[1]]().default_environment(beam_options))
    assert ours == kinds.get(picked), changed(
        f"{argv[1]}'s default environment", f"Beam picks {picked.__name__}, runners.py says {ours}"
    )


class _JobService:
    """Answers GetJobMetrics (empty counters) and counts the calls."""

    def __init__(self):
        self.metric_calls = 0

    def GetJobMetrics(self, request):
        from apache_beam.portability.api import beam_job_api_pb2

        self.metric_calls += 1
        return beam_job_api_pb2.GetJobMetricsResponse()


def portable_result(service):
    from apache_beam.runners.portability.portable_runner import PipelineResult

    return PipelineResult(service, "job-1", iter(()), iter(()))


def test_fresh_metrics_asks_the_job_service_each_time_where_beam_caches_the_first_answer():
    cached = _JobService()
    result = portable_result(cached)
    for _ in range(2):
        result.metrics()
    assert cached.metric_calls == 1, changed(
        "PortableRunner's PipelineResult.metrics", "it no longer caches its answer in _metrics"
    )
    asked = _JobService()
    result = portable_result(asked)
    for _ in range(2):
        beam_api.fresh_metrics(result).query()
    assert asked.metric_calls == 2, changed(
        "PortableRunner's PipelineResult._metrics", "clearing it no longer asks again"
    )


def test_portable_job_id_reads_the_id_of_a_portable_result():
    assert beam_api.portable_job_id(portable_result(_JobService())) == "job-1", changed(
        "PortableRunner's PipelineResult._job_id", "the job service's id is no longer kept there"
    )
    assert beam_api.portable_job_id(object()) is None
