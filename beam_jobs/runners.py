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
and on a job service at ``embed`` or localhost, unless the SDK
workers run in Docker containers (``--environment_type DOCKER``), which have their own disks.
"""

from __future__ import annotations

from grit_pipeline.beam_jobs.config import BuildError

LOCAL_RUNNERS = (None, "DirectRunner", "SwitchingDirectRunner", "FnApiRunner")
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


def workers_on_this_machine(options) -> bool:
    from apache_beam.options import pipeline_options as po

    name = short_name(runner_name(options))
    if name in LOCAL_RUNNERS:
        return True
    portable = options.view_as(po.PortableOptions)
    if (portable.environment_type or "").upper() == "DOCKER":
        return False
    if portable.job_endpoint is not None and name in ("PortableRunner", "SparkRunner", "FlinkRunner"):
        return _local_endpoint(portable.job_endpoint)
    if name == "SparkRunner":
        master = options.view_as(po.SparkRunnerOptions).spark_master_url
        return master.startswith("local") or _local_endpoint(master.removeprefix("spark://"))
    if name == "FlinkRunner":
        master = options.view_as(po.FlinkRunnerOptions).flink_master
        return master in ("[local]", "[auto]") or _local_endpoint(master.split("://")[-1])
    return False


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

    if short_name(runner_name(options)) not in ("SparkRunner", "FlinkRunner", "PortableRunner"):
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
