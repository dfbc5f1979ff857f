"""`grit stage-detector SOURCE DEST`: a hub model (at a revision) or a saved folder -> a staged folder at DEST.

DEST is any fsspec URL (gs://, s3://, hdfs://, file://); `grit build --detector DEST` then makes each
worker machine copy it once and check it against the checksums file written there.
"""

from __future__ import annotations

import argparse

from grit_pipeline.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="hub id (e.g. IDEA-Research/grounding-dino-base) or a save_pretrained folder"
    )
    parser.add_argument("dest", help="folder URL to stage into (gs://..., s3://..., hdfs://..., file://...)")
    parser.add_argument(
        "--revision", default=None, help="hub branch, tag or commit (recorded as the commit it is)"
    )


def run(args: argparse.Namespace) -> int:
    from grit_pipeline.grounding.staging import stage_detector

    try:
        record = stage_detector(args.source, args.dest, args.revision)
    except (ValueError, OSError) as err:
        raise CommandError(f"cannot stage {args.source!r} to {args.dest!r}: {err}") from err
    revision = f" at {record['revision']}" if record["revision"] else ""
    print(
        f"staged {args.source}{revision}: {len(record['files'])} files, checksum {record['checksum'][:16]} -> {args.dest}"
    )
    return 0
