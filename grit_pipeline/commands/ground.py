"""`grit ground`: the text stage plus grounding on one image; prints (or draws) each chunk's boxes.

The detector and text flags are the build's (``DetectorConfig``'s and ``TextConfig``'s declarations),
less the build-only batching, image source and worker threads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grit_pipeline.errors import CommandError
from grit_pipeline.flags import add_flags, from_flags
from grit_pipeline.grounding.base import GroundingResult
from grit_pipeline.grounding.config import DetectorConfig
from grit_pipeline.text import TextConfig

# DetectorConfig fields without a flag here: one image, read from a file, in this process.
UNUSED_HERE = ("batch_size", "image_source", "threads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, type=Path, help="the image file")
    parser.add_argument("--caption", required=True, help="its caption (the detector's prompt)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, default=None, help="write the image with its boxes to this PNG")
    add_flags(parser.add_argument_group("grounding"), DetectorConfig, skip=UNUSED_HERE)
    add_flags(parser.add_argument_group("text"), TextConfig)


def configs(args: argparse.Namespace) -> tuple[DetectorConfig, TextConfig]:
    """The detector (one image: batches of 1) and text options; CommandError on a bad value."""
    try:
        return from_flags(DetectorConfig, args, batch_size=1), from_flags(TextConfig, args)
    except ValueError as err:
        raise CommandError(str(err)) from err


def to_json(parsed, result: GroundingResult, size: tuple[int, int], provenance: dict) -> dict:
    """The `--json` record: every noun chunk with its boxes (normalised and in pixels)."""
    width, height = size
    chunks = []
    for index, (span, boxes) in enumerate(zip(parsed.noun_chunks, result.boxes)):
        record = {
            "start": span.start,
            "end": span.end,
            "text": span.text(parsed.caption),
            "boxes": [
                {
                    "box": list(sb.box.as_tuple()),
                    "box_pixels": [round(v * s, 1) for v, s in zip(sb.box.as_tuple(), (width, height) * 2)],
                    "score": round(sb.score, 4),
                }
                for sb in boxes
            ],
        }
        if index in result.span_errors:
            record["error"] = result.span_errors[index]
        chunks.append(record)
    out = {"caption": parsed.caption, "width": width, "height": height, "noun_chunks": chunks}
    if result.reject_reason:
        out["reject_reason"] = result.reject_reason
    out["provenance"] = provenance
    return out


def to_table(record: dict) -> str:
    """A readable block of the `--json` record."""
    lines = [f"caption: {record['caption']!r} ({record['width']}x{record['height']})"]
    for chunk in record["noun_chunks"]:
        head = f"  [{chunk['start']:>3},{chunk['end']:>3}) {chunk['text']!r}"
        if "error" in chunk:
            lines.append(f"{head}: {chunk['error']}")
        elif not chunk["boxes"]:
            lines.append(f"{head}: no box")
        for found in chunk["boxes"]:
            x1, y1, x2, y2 = found["box_pixels"]
            lines.append(f"{head}: {found['score']:.3f}  ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")
    if "reject_reason" in record:
        lines.append(f"  rejected: {record['reject_reason']}")
    return "\n".join(lines)


def draw(image, record: dict, out: Path) -> None:
    """Outline every kept box in its chunk's colour, labelled with the chunk text, at the image's size."""
    from grit_pipeline.shards.drawing import draw_boxes, phrases_from_entities

    chunks = [c for c in record["noun_chunks"] if c["boxes"]]
    phrases = phrases_from_entities(
        ((c["text"], (c["start"], c["end"]), [b["box"] for b in c["boxes"]]) for c in chunks),
        scores=([b["score"] for b in c["boxes"]] for c in chunks),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_boxes(image, phrases, size=max(image.size)).save(out, format="PNG")


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, UnidentifiedImageError) as err:
        raise CommandError(f"cannot read image {str(path)!r}: {err}") from err


def run(args: argparse.Namespace) -> int:
    from grit_pipeline.grounding import DetectorUnavailableError, GroundingRequest, load_detector
    from grit_pipeline.text import PipelineNotFoundError, TextStage

    config, text = configs(args)
    image = _open_image(args.image)
    try:
        [parsed] = TextStage(text).parse([args.caption])
    except PipelineNotFoundError as err:
        raise CommandError(str(err)) from err
    if parsed.reject_reason:
        raise CommandError(f"the caption cannot be grounded: {parsed.reject_reason}")
    print(f"loading detector {config.model} ({config.backend}) ...", file=sys.stderr)
    try:
        detector = load_detector(config)
    except DetectorUnavailableError as err:
        raise CommandError(str(err)) from err
    [result] = detector.ground([GroundingRequest(image, parsed.caption, parsed.noun_chunks)])
    record = to_json(parsed, result, image.size, detector.provenance())
    print(json.dumps(record, ensure_ascii=False) if args.json else to_table(record))
    if args.out:
        draw(image, record, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
