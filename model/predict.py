"""`grit predict`: a grounded caption for one image, its entities with boxes, and the image with them drawn."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from grit_pipeline.locations import Entity, parse_grounded_caption
from grit_pipeline.model.evaluate import load_checkpoint
from grit_pipeline.model.examples import encode_text
from grit_pipeline.model.images import FULL_WINDOW, decode_image, render, to_pixel_values
from grit_pipeline.shards.drawing import draw_boxes, phrases_from_entities


@torch.no_grad()
def predict(model, processor, image: Image.Image, prompt: str, grid: int, max_new_tokens: int) -> str:
    """The prompt followed by the greedy continuation, tags kept, up to ``</s>``."""
    size = int(processor.image_processor.crop_size["height"])
    pixels = to_pixel_values(
        render(image, FULL_WINDOW, size),
        processor.image_processor.image_mean,
        processor.image_processor.image_std,
    )
    ids, mask = encode_text(processor.tokenizer, prompt, model.config.latent_query_num, 10_000, add_eos=False)
    input_ids = torch.tensor([ids])
    generated = model.generate(
        pixel_values=torch.from_numpy(pixels)[None],
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        image_embeds_position_mask=torch.tensor([mask]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    continuation = processor.tokenizer.decode(generated[0, len(ids) :], skip_special_tokens=False)
    return (prompt + continuation).split("</s>")[0]


def draw_entities(image: Image.Image, entities: list[Entity]) -> Image.Image:
    """A copy of ``image``, at its own size, with each entity's boxes and name drawn."""
    return draw_boxes(image, phrases_from_entities(entities), size=max(image.size))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or training output folder")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--prompt", default="<grounding>", help="text to continue (default: <grounding>)")
    parser.add_argument("--out", default=None, help="write the image with the boxes drawn to this PNG")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print text and entities as one JSON object")


def run(args: argparse.Namespace) -> int:
    from grit_pipeline.cli import CommandError

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
