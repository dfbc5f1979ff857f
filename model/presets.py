"""Model presets as data, and the Kosmos2ForConditionalGeneration they build.

``tiny`` is for tests and CPU training on ``grit synth`` data, ``small`` for one GPU, ``kosmos-2``
the paper's shape (CLIP ViT-L/14 at 224 px, 24-layer 2048-wide decoder, 64 latent queries,
about 1.6B parameters). The architecture is always transformers' own, so every checkpoint loads
with ``Kosmos2ForConditionalGeneration.from_pretrained``; presets differ only in sizes and in
how a few weights are initialised (see ``init_image_projection`` and ``init_location_embeddings``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration

from grit_pipeline.locations import NUM_PATCHES_PER_SIDE, patch_token


@dataclass(frozen=True)
class ModelPreset:
    """Sizes of one Kosmos-2 model, and the data settings tied to them."""

    name: str
    image_size: int  # square side in pixels the vision tower sees
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    text_ffn: int
    latent_queries: int  # image slots in the text sequence (64 in Kosmos-2)
    max_positions: int
    dropout: float
    tokenizer_vocab: int  # upper bound for a tokenizer trained on the corpus (offline)
    # The P of the location grid. Kosmos-2 uses 32; a coarser grid for a tiny model means each
    # location token is seen 16x more often, which is what lets it generalise on CPU budgets.
    location_grid: int = NUM_PATCHES_PER_SIDE
    # Std of the image-to-text projection's dense layer. transformers draws it at the text init_std
    # (0.02) while the latent queries it is concatenated with are drawn at std 1, so at init the
    # image carries ~1/50 of the signal in the image slots; 0 keeps transformers' default.
    image_projection_std: float = 0.0
    # Location-token embeddings as a sum of a row and a column vector at init, so neighbouring cells
    # start out similar (the output head is tied to these embeddings).
    factorised_location_init: bool = False


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        image_size=32,
        patch_size=8,
        vision_width=128,
        vision_layers=3,
        vision_heads=4,
        text_width=128,
        text_layers=3,
        text_heads=4,
        text_ffn=512,
        # 16, not Kosmos-2's 64: the slots are text positions, and 64 of them make a tiny step 2.8x
        # dearer (the vision tower is ~15 % of a step, so a cheaper one would not help). The count
        # is saved with the processor (``build_processor``), so the standard call inserts 16.
        latent_queries=16,
        max_positions=256,
        dropout=0.0,  # a tiny model on an endless synthetic stream does not overfit
        tokenizer_vocab=512,
        location_grid=8,
        image_projection_std=1.0,
        factorised_location_init=True,
    ),
    "small": ModelPreset(
        name="small",
        image_size=224,
        patch_size=14,
        vision_width=384,
        vision_layers=6,
        vision_heads=6,
        text_width=512,
        text_layers=8,
        text_heads=8,
        text_ffn=2048,
        latent_queries=64,
        max_positions=512,
        dropout=0.1,
        tokenizer_vocab=16000,
        image_projection_std=1.0,
        factorised_location_init=True,
    ),
    "kosmos-2": ModelPreset(
        name="kosmos-2",
        image_size=224,
        patch_size=14,
        vision_width=1024,
        vision_layers=24,
        vision_heads=16,
        text_width=2048,
        text_layers=24,
        text_heads=32,
        text_ffn=8192,
        latent_queries=64,
        max_positions=2048,
        dropout=0.1,
        tokenizer_vocab=64000,  # the released sentencepiece model has 64,000 pieces
    ),
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError as err:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from err


def kosmos2_config(preset: ModelPreset, tokenizer) -> Kosmos2Config:
    """The transformers config of ``preset`` for a processor's ``tokenizer``."""
    if len(tokenizer) <= preset.latent_queries + 4:
        # The processor writes image slots as ids 4 .. 4 + latent_queries - 1; they must be real ids.
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens, fewer than the {preset.latent_queries} image slots need"
        )
    text = {
        "vocab_size": len(tokenizer),
        "embed_dim": preset.text_width,
        "layers": preset.text_layers,
        "attention_heads": preset.text_heads,
        "ffn_dim": preset.text_ffn,
        "max_position_embeddings": preset.max_positions,
        "dropout": preset.dropout,
        "attention_dropout": preset.dropout,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "hidden_size": preset.vision_width,
        "intermediate_size": 4 * preset.vision_width,
        "num_hidden_layers": preset.vision_layers,
        "num_attention_heads": preset.vision_heads,
        "image_size": preset.image_size,
        "patch_size": preset.patch_size,
    }
    # location_grid is an extra field of config.json, so plain transformers users can read P there.
    return Kosmos2Config(
        text_config=text,
        vision_config=vision,
        latent_query_num=preset.latent_queries,
        location_grid=preset.location_grid,
    )


@torch.no_grad()
def init_image_projection(model: Kosmos2ForConditionalGeneration, std: float) -> None:
    """Redraw the image projection's dense weight at ``std`` (its input is L2-normalised features)."""
    if std > 0:
        model.image_to_text_projection.dense.weight.normal_(0.0, std)


@torch.no_grad()
def init_location_embeddings(model: Kosmos2ForConditionalGeneration, tokenizer, grid: int) -> None:
    """Embeddings of ``<patch_index_k>`` for k < grid**2 as row vector + column vector."""
    ids = tokenizer.convert_tokens_to_ids([patch_token(k) for k in range(grid * grid)])
    weight = model.get_input_embeddings().weight
    std = model.config.text_config.init_std
    columns = torch.randn(grid, weight.shape[1]) * std
    rows = torch.randn(grid, weight.shape[1]) * std
    for k, token_id in enumerate(ids):
        weight[token_id] = columns[k % grid] + rows[k // grid]


def build_model(preset: ModelPreset, processor, seed: int = 0) -> Kosmos2ForConditionalGeneration:
    """A freshly initialised model of ``preset``, reproducible from ``seed``."""
    torch.manual_seed(seed)
    model = Kosmos2ForConditionalGeneration(kosmos2_config(preset, processor.tokenizer))
    init_image_projection(model, preset.image_projection_std)
    if preset.factorised_location_init:
        init_location_embeddings(model, processor.tokenizer, preset.location_grid)
    return model
