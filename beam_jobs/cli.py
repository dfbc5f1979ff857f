"""`grit build`: the Beam job on the command line (see ``job`` for what it does)."""

from __future__ import annotations

from grit_pipeline.beam_jobs.options import add_arguments  # noqa: F401  (the cli module's interface)


def run(args) -> int:
    from grit_pipeline.beam_jobs.job import BuildError, launch
    from grit_pipeline.beam_jobs.options import BEAM_ARGV, build_config
    from grit_pipeline.cli import CommandError

    try:
        return launch(build_config(args), getattr(args, BEAM_ARGV, None))
    except BuildError as err:
        raise CommandError(str(err)) from err
