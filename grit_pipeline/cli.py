"""The `grit` command: one subcommand per module, imported only when it is run.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; heavy
dependencies (torch, Beam, spaCy) are imported inside those modules, so ``grit --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from grit_pipeline.errors import CommandError

# name -> (module, one-line help). Order is the order of `grit --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "build": (
        "grit_pipeline.commands.build",
        "run the Beam job: image-text pairs in, GRIT Parquet shards out",
    ),
    "parse": (
        "grit_pipeline.commands.parse",
        "noun chunks and referring expressions of captions (text stage)",
    ),
    "ground": ("grit_pipeline.commands.ground", "text stage plus grounding on one image"),
    "stage-detector": (
        "grit_pipeline.commands.stage_detector",
        "copy a detector (hub model at a revision, or a folder) to a URL workers copy once, with checksums",
    ),
    "inspect": ("grit_pipeline.commands.inspect", "summary statistics and plots of shards"),
    "validate": ("grit_pipeline.commands.validate", "check shards against the schema and its invariants"),
    "show": ("grit_pipeline.commands.show", "draw samples with their boxes: contact sheet and HTML gallery"),
    "head": ("grit_pipeline.commands.head", "first rows as JSON lines"),
    "convert": (
        "grit_pipeline.commands.convert",
        "convert shards to kosmos2-tsv, webdataset, hf-dataset or jsonl",
    ),
    "synth": ("grit_pipeline.commands.synth", "write a synthetic grounded corpus of coloured shapes"),
    "train": ("grit_pipeline.commands.train", "train or fine-tune Kosmos-2 on shards"),
    "eval": (
        "grit_pipeline.commands.evaluate",
        "grounding accuracy of a checkpoint: held-out shards, Flickr30k Entities or RefCOCO(+/g)",
    ),
    "audit": (
        "grit_pipeline.commands.audit",
        "box precision/recall of the build's text and grounding stages against Flickr30k Entities",
    ),
    "predict": ("grit_pipeline.commands.predict", "generate a grounded caption for one image"),
}


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grit", description=__doc__.splitlines()[0])
    from grit_pipeline import __version__

    parser.add_argument("--version", action="version", version=f"grit-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen command's module (and its dependencies) is imported
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `grit`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except CommandError as err:
        print(f"grit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
