"""Every private Beam (and argparse) name this package uses, behind one small function each.

Beam has no public way to do these; each was read from Beam 2.77.0 (pyproject.toml pins it), and
``tests/test_beam_api.py`` checks each against the installed Beam, naming the piece that changed:

- ``beam_option_actions``: every pipeline option as Beam declares it, for `grit build`'s parser
  (``_BeamArgumentParser``, each ``PipelineOptions`` subclass's ``_add_argparse_args``, and the
  parser's ``_actions``, argparse's list of what was declared);
- ``option_strings``: the option strings a parser declares (argparse's ``_actions``);
- ``fresh_metrics``: a running job's counters asked for again (PortableRunner's result caches its
  first answer in ``_metrics``);
- ``portable_job_id``: a job service's id of a submitted job (PortableRunner's result keeps it in
  ``_job_id``; Dataflow's result has a public ``job_id()``).
"""

from __future__ import annotations

import argparse
import logging

BEAM_VERSION_CHECKED = "2.77.0"  # the version these names were read from (pyproject.toml's pin)


def beam_option_actions() -> list[argparse.Action]:
    """The argparse actions of every Beam pipeline option (``--runner``, ``--job_endpoint``, ...)."""
    # Beam's GCP modules warn at import time that apitools is missing (only Dataflow needs it,
    # through the [gcp] extra); that line on every `grit build` would only confuse.
    logging.disable(logging.WARNING)
    try:
        from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
    finally:
        logging.disable(logging.NOTSET)

    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return list(parser._actions)


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string ``parser`` declares so far (``--output``, ``-h``, ...)."""
    return {s for action in parser._actions for s in action.option_strings}


def fresh_metrics(result):
    """``result.metrics()`` as the runner reports them now, not a cached first answer."""
    if hasattr(result, "_metrics"):
        result._metrics = None  # PortableRunner's result caches its first answer; ask again
    return result.metrics()


def portable_job_id(result) -> str | None:
    """The job service's id of a job submitted through PortableRunner (Spark, Flink too), else None."""
    return getattr(result, "_job_id", None)
