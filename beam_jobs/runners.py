"""Which runner a build uses, whether its workers share this machine, and what each runner needs first.

- Local runners (none given, DirectRunner, FnApiRunner): Beam's FnApiRunner, in process or with
  ``--direct_running_mode multi_processing``; never Prism, which would download a binary.
- SparkRunner and FlinkRunner: Beam's portable runners; their Java job server comes from our
  cache (``job_servers``) unless ``--spark_job_server_jar`` / ``--flink_job_server_jar`` or a
  ``--job_endpoint`` is given.
- PortableRunner: any job service (``--job_endpoint embed`` is Beam's own, in process).
- DaskRunner is refused (see ``DASK_REFUSAL``).

Workers share this machine (so local paths work) on local runners, on Spark ``local[N]`` or a
standalone master on localhost, on Flink ``[local]`` / ``[auto]`` or a session cluster on localhost,
and on a job service at ``embed`` or localhost, unless the SDK workers run in Docker containers,
which have their own disks: ``--environment_type DOCKER``, or no environment type where Beam picks
Docker (everywhere but Spark's local masters and Flink's ``[local]`` / ``[auto]``, where it picks
LOOPBACK: SDK workers in threads of the launcher).

``sdk_processes_on_this_machine`` counts the SDK worker processes that work at once on this machine,
where the options say it: each worker's torch pool is sized to its share of the cores from it.
"""

from __future__ import annotations

import os
import re

from grit_pipeline.beam_jobs.config import BuildError

LOCAL_RUNNERS = (None, "DirectRunner", "SwitchingDirectRunner", "FnApiRunner")
PORTABLE_RUNNERS = ("PortableRunner", "SparkRunner", "FlinkRunner")
# The masters for which Beam's SparkRunner and FlinkRunner pick LOOPBACK workers (Beam's own rules).
SPARK_LOCAL_MASTER = r"^local(\[.+\])?$"
FLINK_LOCAL_MASTERS = ("[local]", "[auto]")
DASK_REFUSAL = (
    "DaskRunner cannot run this job correctly (Beam's Dask runner drops outputs emitted in "
    "finish_bundle, merges tagged outputs and has no user state): use the local runner, "
    "PortableRunner, SparkRunner, FlinkRunner or DataflowRunner"
)
# Paths a remote worker would resolve on its own machine (or in its own process: memory://).
LOCAL_PROTOCOLS = ("file", "local", "memory")


def runner_name(options) -> str | None:
    from apache_beam.options.pipeline_options import StandardOptions

    name = options.view_as(StandardOptions).runner
    return name if name is None or isinstance(name, str) else type(name).__name__


def short_name(name: str | None) -> str | None:
    return None if name is None else name.rsplit(".", 1)[-1]


def pick_runner(options):
    """Beam's FnApiRunner for the local runner names; None lets Beam pick by ``--runner``."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    name = short_name(runner_name(options))
    if name is not None and name.lower() == "daskrunner":
        raise BuildError(DASK_REFUSAL)
    return FnApiRunner() if name in LOCAL_RUNNERS else None


def _local_endpoint(endpoint: str | None) -> bool:
    return endpoint is not None and (
        endpoint == "embed" or endpoint.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
    )


def environment_type(options) -> str:
    """The SDK workers' environment Beam uses on a portable runner: ``--environment_type`` (a
    ``beam:env:KIND:v1`` URN read as KIND), else LOOPBACK on Spark's ``local``/``local[...]`` masters
    and Flink's ``[local]``/``[auto]`` (Beam's SparkRunner and FlinkRunner pick it), else DOCKER."""
    from apache_beam.options import pipeline_options as po

    given = (options.view_as(po.PortableOptions).environment_type or "").upper()
    if given.startswith("BEAM:ENV:"):
        given = given.removeprefix("BEAM:ENV:").split(":")[0]
    if given:
        return given
    name = short_name(runner_name(options))
    if name == "SparkRunner" and re.match(SPARK_LOCAL_MASTER, _spark_master(options)):
        return "LOOPBACK"
    if name == "FlinkRunner" and _flink_master(options) in FLINK_LOCAL_MASTERS:
        return "LOOPBACK"
    return "DOCKER"


def _spark_master(options) -> str:
    from apache_beam.options import pipeline_options as po

    return options.view_as(po.SparkRunnerOptions).spark_master_url


def _flink_master(options) -> str:
    from apache_beam.options import pipeline_options as po

    return options.view_as(po.FlinkRunnerOptions).flink_master


def workers_on_this_machine(options) -> bool:
    """Whether the job's SDK workers run on this machine and see its files (see the module's doc)."""
    from apache_beam.options import pipeline_options as po

    name = short_name(runner_name(options))
    if name in LOCAL_RUNNERS:
        return True
    if name not in PORTABLE_RUNNERS or environment_type(options) == "DOCKER":
        return False
    endpoint = options.view_as(po.PortableOptions).job_endpoint
    if endpoint is not None:
        return _local_endpoint(endpoint)
    if name == "SparkRunner":
        master = _spark_master(options)
        return master.startswith("local") or _local_endpoint(master.removeprefix("spark://"))
    if name == "FlinkRunner":
        master = _flink_master(options)
        return master in FLINK_LOCAL_MASTERS or _local_endpoint(master.split("://")[-1])
    return False


def sdk_processes_on_this_machine(options) -> int | None:
    """How many SDK worker processes of the job work at once on this machine, or None when its
    workers run elsewhere or only they can count themselves (``grounding.devices``' registry).

    - local runners: 1 (``in_memory``, ``multi_threading``: the launcher), or ``--direct_num_workers``
      processes in ``multi_processing`` mode (0: one per core, as Beam counts);
    - LOOPBACK workers: 1, the launcher (Beam runs them in its threads);
    - Beam's embedded job service (``--job_endpoint embed``): 1, one worker per environment;
    - Spark ``local[N]``, Flink ``[local]`` / ``[auto]`` started here, PROCESS or EXTERNAL workers:
      ``--sdk_worker_parallelism`` (0: the cores but one, Beam's Java rule), at most the tasks that
      run at once: N (``*``: the cores; ``local-cluster[W,C,M]``: W executors of C), Flink's
      ``--parallelism``, else one task per core;
    - other job services, standalone masters and session clusters on this machine: None (how many
      workers and SDK processes they run is their own configuration).
    """
    from apache_beam.options import pipeline_options as po

    name = short_name(runner_name(options))
    if name in LOCAL_RUNNERS:
        direct = options.view_as(po.DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return 1
        return direct.direct_num_workers or os.cpu_count() or 1
    if not workers_on_this_machine(options):
        return None
    endpoint = options.view_as(po.PortableOptions).job_endpoint
    if environment_type(options) == "LOOPBACK" or endpoint == "embed":
        return 1
    if endpoint is not None:
        return None
    tasks = _local_tasks(name, options)
    if tasks is None:
        return None
    executors, slots = tasks
    return executors * min(slots, _sdk_worker_parallelism(options))


def _sdk_worker_parallelism(options) -> int:
    from apache_beam.options import pipeline_options as po

    from grit_pipeline.grounding.devices import usable_cores

    given = int(options.view_as(po.PortableOptions).sdk_worker_parallelism or 0)  # Beam keeps it a string
    return given if given > 0 else max(usable_cores() - 1, 1)


def _local_tasks(name: str | None, options) -> tuple[int, int] | None:
    """(executors, tasks each runs at once) of a Spark or Flink master started in the job server."""
    from apache_beam.options import pipeline_options as po

    from grit_pipeline.grounding.devices import usable_cores

    if name == "FlinkRunner" and _flink_master(options) in FLINK_LOCAL_MASTERS:
        parallelism = options.view_as(po.FlinkRunnerOptions).parallelism
        return 1, parallelism if parallelism and parallelism > 0 else usable_cores()
    if name != "SparkRunner":
        return None
    master = _spark_master(options)
    if master == "local":
        return 1, 1
    local = re.fullmatch(r"local\[(\*|\d+)(?:,\d+)?\]", master)
    if local:
        return 1, usable_cores() if local[1] == "*" else max(int(local[1]), 1)
    cluster = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master)
    return (int(cluster[1]), int(cluster[2])) if cluster else None


def provide_job_server(options) -> None:
    """Point Spark's or Flink's runner at our cached job server jar (fetched on first use), in place.

    Called just before the job starts (Beam reads the option then), so building the graph needs
    no Java; a given ``--*_job_server_jar`` or ``--job_endpoint`` is left alone.
    """
    from apache_beam.options import pipeline_options as po

    from grit_pipeline.beam_jobs.job_servers import JobServerUnavailableError, job_server

    name = short_name(runner_name(options))
    views = {"SparkRunner": po.SparkRunnerOptions, "FlinkRunner": po.FlinkRunnerOptions}
    if name not in views or options.view_as(po.PortableOptions).job_endpoint:
        return
    view, key = options.view_as(views[name]), "spark" if name == "SparkRunner" else "flink"
    if getattr(view, f"{key}_job_server_jar"):
        return
    try:
        setattr(view, f"{key}_job_server_jar", str(job_server(key)))
    except JobServerUnavailableError as err:
        raise BuildError(str(err)) from err


# Beam's portable runners tear an SDK environment down when the stage that started it ends, unless
# --environment_cache_millis says to keep it: on Spark every stage of this job (about ten, between
# its shuffles) would start its own SDK workers, each making a venv, installing the wheel and
# loading spaCy and the detector again. Seen on the standalone cluster of the runner tests: six
# environments per worker before the job's end. Ten minutes outlasts any gap between stages.
ENVIRONMENT_CACHE_MS = 600_000


def keep_sdk_environments(options) -> bool:
    """Keep SDK workers across a job's stages on portable runners (in place); True if it set the option."""
    from apache_beam.options import pipeline_options as po

    if short_name(runner_name(options)) not in PORTABLE_RUNNERS:
        return False
    portable = options.view_as(po.PortableOptions)
    if portable.environment_cache_millis:
        return False  # the user's value stands
    portable.environment_cache_millis = ENVIRONMENT_CACHE_MS
    return True


def check_paths_reachable(paths: list[str]) -> None:
    """Refuse paths remote workers would resolve on their own disks (file://, plain paths, memory://)."""
    import fsspec

    local = []
    for path in paths:
        protocol = fsspec.core.split_protocol(path)[0] or "file"
        if protocol in LOCAL_PROTOCOLS:
            local.append(path)
    if local:
        raise BuildError(
            f"a remote runner's workers cannot reach this machine's files ({', '.join(local)}): "
            "give gs://, s3://, hdfs:// ... paths (with the matching fsspec package installed)"
        )
