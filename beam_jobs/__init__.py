"""The Beam job: one PTransform per stage, the job's options, and ``run(argv)``."""


def run(argv=None, *, test_pipeline=None) -> int:
    """The job's entry point (see ``grit_pipeline.beam_jobs.job.run``); Beam is imported on call."""
    from grit_pipeline.beam_jobs.job import run as run_job

    return run_job(argv, test_pipeline=test_pipeline)


__all__ = ["run"]
