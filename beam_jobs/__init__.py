"""The Beam job: one PTransform per stage, the job's options, and ``run(argv)``."""

from grit_pipeline.beam_jobs.job import run

__all__ = ["run"]
