"""`grit eval`: grounding accuracy at IoU >= 0.5, loss, perplexity and location-token loss of a checkpoint.

Accuracy is measured as for RefCOCO in the paper (``referring.py``): for each grounded expression
of a held-out row, the prompt ``<grounding><phrase>{expression}</phrase>`` with the image resized
to a square, greedy decoding with ``no_repeat_ngram_size=3``, and a hit when the first box generated
for that phrase has IoU >= 0.5 with a true box of the expression.
Next to it, two trivial baselines: the whole image, and the mean true box. Loss and perplexity are
over every token after ``</image>`` of the grounded text; the location loss only over the
``<patch_index_NNNN>`` targets, also with the images shuffled across the batch (a model that
grounds must do clearly better with the right image).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grit_pipeline.assemble import select_grounding_spans
from grit_pipeline.locations import NUM_PATCHES_PER_SIDE, patch_token
from grit_pipeline.model.checkpoint import load_training_config, resolve_checkpoint
from grit_pipeline.model.config_bounds import bounded_config, location_grid
from grit_pipeline.model.data import ImageFolder, collate
from grit_pipeline.model.examples import IGNORE_INDEX, ExampleConfig, SkipRow, make_example
from grit_pipeline.model.referring import GenerationConfig, Query, answer, best_iou
from grit_pipeline.schemas.reader import list_shard_files, read_shard
from grit_pipeline.schemas.shard import group_by_span, image_bytes, spans_from_column


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    expressions: int
    baseline_whole_image: float
    baseline_mean_box: float
    loss: float
    perplexity: float
    location_loss: float
    location_loss_shuffled: float


def load_checkpoint(path: str | Path):
    """(model in eval mode, processor, location grid P) of a checkpoint, training output folder or hub id.

    A folder of ours carries its grid in ``config.json`` (``location_grid``) and in
    ``training_config.json``; anything else (``microsoft/kosmos-2-patch14-224``) uses P = 32.
    """
    from transformers import Kosmos2ForConditionalGeneration

    from grit_pipeline.model.processor import load_processor

    local = Path(path).exists()
    checkpoint = resolve_checkpoint(path) if local else str(path)
    saved = load_training_config(checkpoint) if local else {}
    config = bounded_config(checkpoint, local)  # before anything is built from it
    try:
        model = Kosmos2ForConditionalGeneration.from_pretrained(checkpoint, config=config).eval()
        processor = load_processor(str(checkpoint))
    except OSError as err:
        raise OSError(f"cannot load the checkpoint {path}: {str(err).splitlines()[0]}") from err
    except Exception as err:  # a truncated or corrupt weights file raises the reader's own error types
        raise ValueError(f"cannot load the checkpoint {path} (truncated or corrupt?): {err}") from err
    grid = getattr(model.config, "location_grid", None) or saved.get("location_grid") or NUM_PATCHES_PER_SIDE
    return model, processor, location_grid(grid)


def iter_records(data: str, images: str | None = None, limit: int | None = None) -> Iterator[dict]:
    """Rows in file order with ``image`` bytes resolved (own column, img2dataset column or folder)."""
    folder = ImageFolder(images) if images else None
    remaining = limit if limit is not None else float("inf")
    for path in list_shard_files(data):
        if remaining <= 0:
            return
        table = read_shard(path)
        table = table.slice(0, int(min(remaining, table.num_rows)))  # convert only the rows used
        remaining -= table.num_rows
        for row in table.to_pylist():
            data_bytes = image_bytes(row)
            if data_bytes is None and folder is not None:
                data_bytes = folder.get(str(row["key"]))
            yield {**row, "image": data_bytes}


def referring_items(records, text: ExampleConfig) -> list[Query]:
    """Every grounded expression (after threshold and containment) of ``records``, as a query."""
    items = []
    for row in records:
        if not row.get("image"):
            continue
        spans = select_grounding_spans(spans_from_column(row.get(text.spans_column)), text.min_score)
        for (start, end), group in group_by_span(spans).items():
            key = f"{row.get('key')}:{start}-{end}"
            boxes = tuple(span.box for span in group)
            items.append(Query(key, row["image"], "", row["caption"][start:end], boxes))
    return items


def grounding_accuracy(
    model, processor, items: list[Query], grid: int, generation: GenerationConfig | None = None
) -> dict:
    """Accuracy at IoU >= 0.5 and the whole-image / mean-box baselines."""
    if not items:
        raise ValueError(
            "no grounded expressions to evaluate (no rows with an image and a box above threshold)"
        )
    predictions = answer(model, processor, items, grid, generation or GenerationConfig())
    truth = [item.truth for item in items]
    mean_box = tuple(np.mean([b[0].as_tuple() for b in truth], axis=0).tolist())
    return {
        "accuracy": float(np.mean([p.hit for p in predictions])),
        "expressions": len(items),
        "baseline_whole_image": float(np.mean([best_iou((0.0, 0.0, 1.0, 1.0), t) >= 0.5 for t in truth])),
        "baseline_mean_box": float(np.mean([best_iou(mean_box, t) >= 0.5 for t in truth])),
    }


def location_token_ids(processor) -> torch.Tensor:
    """Token ids of all 1,024 ``<patch_index_NNNN>`` tokens the processor adds (P = 32 in the vocabulary)."""
    count = NUM_PATCHES_PER_SIDE * NUM_PATCHES_PER_SIDE
    ids = processor.tokenizer.convert_tokens_to_ids([patch_token(k) for k in range(count)])
    return torch.tensor(ids)


@torch.no_grad()
def lm_metrics(model, batches: list[dict], location_ids: torch.Tensor) -> dict:
    """Token loss and perplexity; location-token loss with the right and with shuffled images."""
    sums = defaultdict(float)
    for batch in batches:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        for name, pixels in (
            ("right", batch["pixel_values"]),
            ("shuffled", batch["pixel_values"].roll(1, 0)),
        ):
            logits = model(**{**inputs, "pixel_values": pixels}).logits[:, :-1].float()
            targets = labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
            )
            is_location = torch.isin(targets, location_ids)
            sums[f"{name}_loc"] += losses[is_location].sum().item()
            sums["loc_tokens"] += is_location.sum().item() if name == "right" else 0
            if name == "right":
                sums["loss"] += losses[targets != IGNORE_INDEX].sum().item()
                sums["tokens"] += (targets != IGNORE_INDEX).sum().item()
    loss = sums["loss"] / max(sums["tokens"], 1)
    locations = max(sums["loc_tokens"], 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "location_loss": sums["right_loc"] / locations,
        "location_loss_shuffled": sums["shuffled_loc"] / locations,
    }


def eval_batches(records, processor, num_slots: int, text: ExampleConfig, batch_size: int) -> list[dict]:
    """Grounded-text batches (square images) of ``records``, deterministic."""
    rng, examples = random.Random(0), []
    for row in records:
        try:
            examples.append(make_example(row, processor, text, num_slots, rng))
        except SkipRow:
            continue
    pad = processor.tokenizer.pad_token_id
    return [collate(examples[i : i + batch_size], pad) for i in range(0, len(examples), batch_size)]


def evaluate(checkpoint: str, data: str, images: str | None, max_rows: int, batch_size: int) -> Metrics:
    model, processor, grid = load_checkpoint(checkpoint)
    saved = load_training_config(resolve_checkpoint(checkpoint))
    text = ExampleConfig(
        p_grounded=1.0,
        spans_column=saved.get("spans_column", "ref_exps"),
        min_score=saved.get("min_score", 0.65),
        image_mode="square",
        location_grid=grid,
        max_length=saved.get("max_length", 256),
    )
    records = list(iter_records(data, images, max_rows))
    generation = GenerationConfig(batch_size=batch_size)
    accuracy = grounding_accuracy(model, processor, referring_items(records, text), grid, generation)
    batches = eval_batches(records, processor, model.config.latent_query_num, text, batch_size)
    return Metrics(**accuracy, **lm_metrics(model, batches, location_token_ids(processor)))
