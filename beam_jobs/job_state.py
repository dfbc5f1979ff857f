"""A submitted job's identity (for the lock) and, later, from another launcher, its state.

``job_of`` reads the id a runner gave the job: Dataflow's job id (with its project and region),
or a job service's id and endpoint (PortableRunner, and the Spark and Flink job servers). Jobs
that run inside the launcher (the local runners) have none: they end with it.

``job_state`` asks the runner again: the Dataflow API (needs ``[gcp]`` and credentials), or the
job service's ``GetState`` over gRPC. None when the state cannot be learnt (the job service is
gone, no credentials): the lock then refuses rather than guess.
"""

from __future__ import annotations

from grit_pipeline.beam_jobs.beam_api import portable_job_id

# Beam's terminal states (PipelineState.is_terminal); a job in any other state may still write.
TERMINAL_STATES = frozenset({"DONE", "FAILED", "CANCELLED", "UPDATED", "DRAINED"})
STATE_TIMEOUT_S = 10.0


def _option(options, name: str):
    if options is None:
        return None
    return options.get_all_options(retain_unknown_options=True).get(name)


def runner_name(options) -> str:
    """The runner the options name (Beam's default, the local FnApiRunner, when none)."""
    return str(_option(options, "runner") or "DirectRunner")


def job_of(result, options=None) -> dict:
    """{"runner", "id", ...} of a submitted job, or {} when it ran in this process."""
    if callable(getattr(result, "job_id", None)):  # DataflowPipelineResult
        try:
            job_id = result.job_id()
        except Exception:  # no job (a template run): nothing to record
            return {}
        return {
            "runner": "DataflowRunner",
            "id": job_id,
            "project": _option(options, "project"),
            "region": _option(options, "region"),
        }
    job_id = portable_job_id(result)
    if job_id is None:
        return {}
    return {
        "runner": _option(options, "runner") or "PortableRunner",
        "id": job_id,
        "endpoint": _option(options, "job_endpoint"),
    }


def _portable_state(job: dict) -> str | None:
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    endpoint = job.get("endpoint")
    if not endpoint or endpoint == "embed":
        return None  # an in-process job service: gone with its launcher
    channel = grpc.insecure_channel(endpoint)
    try:
        stub = beam_job_api_pb2_grpc.JobServiceStub(channel)
        request = beam_job_api_pb2.GetJobStateRequest(job_id=job["id"])
        state = stub.GetState(request, timeout=STATE_TIMEOUT_S).state
        return beam_job_api_pb2.JobState.Enum.Name(state)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def _dataflow_state(job: dict) -> str | None:
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
        from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
        from apache_beam.runners.dataflow.internal.apiclient import DataflowApplicationClient

        options = PipelineOptions([f"--project={job['project']}", f"--region={job['region']}"])
        found = DataflowApplicationClient(options).get_job(job["id"])
        return str(DataflowPipelineResult.api_jobstate_to_pipeline_state(found.current_state))
    except Exception:  # no [gcp] extra, no credentials, no network: cannot say
        return None


def job_state(job: dict) -> str | None:
    """The job's state as Beam names it (``RUNNING``, ``DONE``...), or None when it cannot be learnt."""
    if job.get("runner") == "DataflowRunner":
        return _dataflow_state(job)
    return _portable_state(job)
