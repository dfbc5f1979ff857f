"""`grit parse`: run the text stage on captions and show what it kept, expanded and dropped."""

from __future__ import annotations

import argparse
import json
import sys

from grit_pipeline.errors import CommandError
from grit_pipeline.flags import add_flags, from_flags
from grit_pipeline.text import CharSpan, ParsedCaption, PipelineNotFoundError, TextConfig, TextStage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "captions", nargs="+", metavar="CAPTION", help="captions to parse ('-' reads lines from stdin)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per caption and line")
    add_flags(parser, TextConfig)


def _span(caption: str, span: CharSpan) -> dict:
    return {"start": span.start, "end": span.end, "text": span.text(caption)}


def to_json(parsed: ParsedCaption) -> dict:
    """The `--json` record of one caption."""
    caption, kept = parsed.caption, set(parsed.kept_ref_exps)
    record = {
        "caption": caption,
        "noun_chunks": [_span(caption, s) for s in parsed.noun_chunks],
        "ref_exps": [
            {**_span(caption, r.span), "chunk": _span(caption, r.chunk), "kept": r in kept}
            for r in parsed.ref_exps
        ],
        "dropped": [
            {**_span(caption, d.span), "reason": d.reason, **({"by": _span(caption, d.by)} if d.by else {})}
            for d in parsed.dropped
        ],
    }
    if parsed.reject_reason:
        record["reject_reason"] = parsed.reject_reason
    return record


def to_table(parsed: ParsedCaption) -> str:
    """A readable block for one caption."""
    caption, kept = parsed.caption, set(parsed.kept_ref_exps)
    lines = [f"caption: {caption!r}"]
    if parsed.reject_reason:
        lines.append(f"  rejected: {parsed.reject_reason}")
    for ref in parsed.ref_exps:
        mark = "kept" if ref in kept else "contained"
        lines.append(
            f"  chunk [{ref.chunk.start:>3},{ref.chunk.end:>3}) {ref.chunk.text(caption)!r:<28}"
            f" -> [{ref.span.start:>3},{ref.span.end:>3}) {ref.span.text(caption)!r}  ({mark})"
        )
    for dropped in parsed.dropped:
        if dropped.reason != "contained":
            lines.append(
                f"  drop  [{dropped.span.start:>3},{dropped.span.end:>3}) "
                f"{dropped.span.text(caption)!r:<28} ({dropped.reason})"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    captions = [line.rstrip("\n") for line in sys.stdin] if args.captions == ["-"] else args.captions
    try:
        stage = TextStage(from_flags(TextConfig, args))
    except (PipelineNotFoundError, ValueError) as err:  # ValueError: the config's one-line checks
        raise CommandError(str(err)) from err
    for parsed in stage.parse(captions):
        print(json.dumps(to_json(parsed), ensure_ascii=False) if args.json else to_table(parsed))
    return 0
