"""`grit build`: argv -> BuildConfig -> the Beam job (`beam_jobs.job.launch`); its errors as CommandError."""

from __future__ import annotations

from grit_pipeline.beam_jobs.options import add_arguments  # noqa: F401  (the cli module's interface)
from grit_pipeline.errors import CommandError


def run(args) -> int:
    from grit_pipeline.beam_jobs.job import BuildError, launch
    from grit_pipeline.beam_jobs.options import BEAM_ARGV, build_config

    try:
        return launch(build_config(args), getattr(args, BEAM_ARGV, None))
    except BuildError as err:
        raise CommandError(str(err)) from err
