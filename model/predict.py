"""`grit predict`: a grounded caption for one image, its entities with boxes, and the image with them drawn."""

from __future__ import annotations

import torch
from PIL import Image

from grit_pipeline.locations import Entity
from grit_pipeline.model.examples import encode_text
from grit_pipeline.model.images import FULL_WINDOW, render, to_pixel_values
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
