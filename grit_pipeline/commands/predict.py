"""`grit predict`: a checkpoint + an image (+ a prompt) -> grounded text, entities, a drawn PNG (`model.predict`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grit_pipeline.errors import CommandError
from grit_pipeline.locations import parse_grounded_caption
from grit_pipeline.model.evaluate import load_checkpoint
from grit_pipeline.model.images import decode_image
from grit_pipeline.model.predict import draw_entities, predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or training output folder")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--prompt", default="<grounding>", help="text to continue (default: <grounding>)")
    parser.add_argument("--out", default=None, help="write the image with the boxes drawn to this PNG")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print text and entities as one JSON object")


def run(args: argparse.Namespace) -> int:
    try:
        image = decode_image(Path(args.image).read_bytes())
        model, processor, grid = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CommandError(str(err)) from err
    raw = predict(model, processor, image, args.prompt, grid, args.max_new_tokens)
    text, entities = parse_grounded_caption(raw, grid)
    if args.out:
        draw_entities(image, entities).save(args.out, format="PNG")
    if args.json:
        record = {
            "raw": raw,
            "text": text,
            "entities": [{"phrase": n, "span": s, "boxes": b} for n, s, b in entities],
        }
        print(json.dumps(record))
    else:
        print(text)
        for name, _, boxes in entities:
            print(f"  {name}: " + ", ".join("(" + ", ".join(f"{v:.3f}" for v in box) + ")" for box in boxes))
    return 0
