"""Grounding queries answered by a Kosmos-2 checkpoint: prompt, greedy generation, the box of the phrase.

This is the original evaluation's protocol (docs/grit.md section 4; microsoft/unilm,
kosmos-2/evaluation): the prompt is ``<grounding>`` + the caption text before the phrase and a space (``f"{prefix} <phrase>..."`` in
``flickr_entities/cook_data.py``; referring expressions have no prefix and no space, as in
``refcoco/cook_data.py``) + ``<phrase>PHRASE</phrase>``; decoding is greedy with
``no_repeat_ngram_size=3`` and runs to the end of the sequence (``</s>``), bounded by
``max_new_tokens`` (fairseq ``--max-len-b 500`` in ``grd-zeroshot-*.sh``), not stopped at the first
``</object>``; the prediction is the first box of the first entity anywhere in the generated text
whose phrase equals the query's phrase (``flickr_entities_evaluate.py`` collects every entity and
skips the others), and a query without such a box is a miss. Boxes are normalised to the whole
image, which the model sees resized to a square, so IoU is the same as in pixels.

>>> text = "<grounding><phrase>a dog</phrase><object><patch_index_0000><patch_index_0099></object>"
>>> box_of_phrase(text, "a dog", 32)
(0.015625, 0.015625, 0.109375, 0.109375)
>>> box_of_phrase(text, "a cat", 32) is None
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from pathlib import Path

import numpy as np
import torch

from grit_pipeline.locations import Box, parse_grounded_caption
from grit_pipeline.model.examples import encode_text
from grit_pipeline.model.images import FULL_WINDOW, decode_image, render, to_pixel_values

IOU_THRESHOLD = 0.5  # a hit, as in every benchmark the paper reports


@dataclass(frozen=True)
class GenerationConfig:
    """How the checkpoint is asked; the defaults are the original evaluation's."""

    # Generation runs to </s>; this only bounds it (the original: fairseq --max-len-b 500, which
    # there counts the prompt too, so 500 new tokens is at least as much room).
    max_new_tokens: int = 500
    no_repeat_ngram_size: int = 3  # fairseq --no-repeat-ngram-size 3 in grd-zeroshot-*.sh
    batch_size: int = 16


@dataclass(frozen=True)
class Query:
    """One phrase to ground in one image, with its true boxes (normalised, whole image)."""

    key: str
    image: str | bytes  # a file path, or encoded image bytes
    context: str  # caption text before the phrase and a space (Flickr30k); "" for a referring expression
    phrase: str
    truth: tuple[Box, ...]

    @property
    def prompt(self) -> str:
        return f"<grounding>{self.context}<phrase>{self.phrase}</phrase>"


@dataclass(frozen=True)
class Prediction:
    key: str
    phrase: str
    box: tuple[float, float, float, float] | None  # None: no box generated for the phrase
    iou: float  # best IoU with a true box (0 without a box)
    hit: bool
    generated: str  # prompt plus continuation, tags kept


def box_of_phrase(text: str, phrase: str, grid: int) -> tuple[float, float, float, float] | None:
    """The first box of the entity named ``phrase`` in grounded ``text`` (None when there is none)."""
    for name, _, boxes in parse_grounded_caption(text, grid)[1]:
        if name == phrase.strip() and boxes:
            return boxes[0]
    return None


def best_iou(box: tuple[float, ...] | None, truth: Sequence[Box]) -> float:
    """The largest IoU of ``box`` with any true box (any-box protocol); 0 for no box."""
    if box is None or not truth:
        return 0.0
    return max(Box(*box).iou(b) for b in truth)


def score(query: Query, generated: str, grid: int) -> Prediction:
    """A query's prediction read from its generation."""
    box = box_of_phrase(generated, query.phrase, grid)
    iou = best_iou(box, query.truth)
    return Prediction(query.key, query.phrase, box, iou, iou >= IOU_THRESHOLD, generated)


@lru_cache(maxsize=16)
def _pixels_of_file(path: str, size: int, mean: tuple, std: tuple) -> np.ndarray:
    # Flickr30k and RefCOCO ask several queries of one image in a row: decode it once.
    return to_pixel_values(render(decode_image(Path(path).read_bytes()), FULL_WINDOW, size), mean, std)


def model_side(image_processor) -> int:
    """The square side the vision tower takes: the crop size, else the resize target."""
    crop = getattr(image_processor, "crop_size", None) or {}
    size = getattr(image_processor, "size", None) or {}
    return int(crop.get("height") or size.get("height") or size["shortest_edge"])


def pixels(image: str | bytes, image_processor) -> np.ndarray:
    """(3, S, S) pixel values of the whole image resized to the model's square."""
    size = model_side(image_processor)
    mean, std = tuple(image_processor.image_mean), tuple(image_processor.image_std)
    if isinstance(image, str):
        return _pixels_of_file(image, size, mean, std)
    return to_pixel_values(render(decode_image(image), FULL_WINDOW, size), mean, std)


def stop_tokens(tokenizer) -> list[int]:
    """The ids generation stops at: the end of the sequence only (never ``</object>``)."""
    return [tokenizer.eos_token_id]


def _batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped by prompt length, so a batch needs no padding and greedy decoding no care."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for _, group in groupby(order, key=lambda i: lengths[i]):
        group = list(group)
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]


@torch.no_grad()
def generate(
    model, processor, queries: Sequence[Query], config: GenerationConfig, progress=None
) -> list[str]:
    """Prompt plus greedy continuation (tags kept, up to ``</s>`` or ``max_new_tokens``) of every query."""
    tokenizer = processor.tokenizer
    slots = model.config.latent_query_num
    encoded = [encode_text(tokenizer, q.prompt, slots, 10_000, add_eos=False) for q in queries]
    stop = stop_tokens(tokenizer)
    texts: list[str] = [""] * len(queries)
    device = next(model.parameters()).device
    for chunk in _batches([len(ids) for ids, _ in encoded], config.batch_size):
        ids = torch.tensor([encoded[i][0] for i in chunk], device=device)
        images = np.stack([pixels(queries[i].image, processor.image_processor) for i in chunk])
        out = model.generate(
            pixel_values=torch.from_numpy(images).to(device, model.dtype),
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            image_embeds_position_mask=torch.tensor([encoded[i][1] for i in chunk], device=device),
            max_new_tokens=config.max_new_tokens,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,
        )
        for i, row in zip(chunk, out):
            continuation = tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=False)
            texts[i] = queries[i].prompt + continuation.split("</s>")[0].split("<pad>")[0]
        if progress is not None:
            progress.update(len(chunk))
    return texts


def answer(model, processor, queries: Sequence[Query], grid: int, config: GenerationConfig, progress=None):
    """The prediction of every query, in order."""
    texts = generate(model, processor, queries, config, progress)
    return [score(q, t, grid) for q, t in zip(queries, texts)]
