"""`grit build`: argv -> BuildConfig -> the Beam job (`beam_jobs.job.launch`); its errors as CommandError."""

from __future__ import annotations

import logging
import os
import sys

from grit_pipeline.beam_jobs.options import add_arguments  # noqa: F401  (the cli module's interface)
from grit_pipeline.errors import CommandError


def run(args) -> int:
    from grit_pipeline.beam_jobs.job import BuildError, cancelled_job_left_running, launch
    from grit_pipeline.beam_jobs.options import BEAM_ARGV, build_config

    try:
        status = launch(build_config(args), getattr(args, BEAM_ARGV, None))
    except BuildError as err:
        raise CommandError(str(err)) from err
    if cancelled_job_left_running():  # a job thread Beam cannot stop would hold the exit forever
        _exit_now(status)
    return status


def _exit_now(status: int) -> None:
    logging.shutdown()  # flush the log lines already written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
