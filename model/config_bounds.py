"""A checkpoint's configuration bounded before any model is built from it (`grit predict`, `grit eval`).

``config.json`` decides how much memory and time building the model takes: ``layers: 1000000``
runs for minutes and gigabytes before anything fails, ``latent_query_num: 10000000`` allocates
gigabytes, ``location_grid: 1e400`` (JSON's infinity) overflows. Every size is checked to be a
positive whole number (not a bool, not 7.9, not infinite) within a range well beyond any real
Kosmos-2 (the released model: 24 + 24 layers, 2,048 wide, 64 latent queries, P = 32), and the
parameter count those sizes imply is bounded too, so no combination of in-range sizes builds a
model no checkpoint could hold. Each refusal is one ValueError line naming the key, the value and
the range.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Bound:
    key: str  # dotted path in config.json
    low: int
    high: int


# Ranges: ~4x the largest public vision-language decoders of this family, far below what a machine holds.
# One table for every bounded size, keyed by its place in config.json.
SIZE_BOUNDS = (
    Bound("text_config.layers", 1, 128),
    Bound("text_config.embed_dim", 1, 16_384),
    Bound("text_config.ffn_dim", 1, 131_072),
    Bound("text_config.attention_heads", 1, 256),
    Bound("text_config.vocab_size", 1, 1_048_576),
    Bound("text_config.max_position_embeddings", 1, 65_536),
    Bound("vision_config.num_hidden_layers", 1, 128),
    Bound("vision_config.hidden_size", 1, 16_384),
    Bound("vision_config.intermediate_size", 1, 131_072),
    Bound("vision_config.num_attention_heads", 1, 256),
    Bound("vision_config.image_size", 1, 4_096),
    Bound("vision_config.patch_size", 1, 4_096),
    Bound("vision_config.num_channels", 1, 4),
    Bound("latent_query_num", 1, 4_096),
)
# The location grid P: P x P location tokens, at most Kosmos-2's 1,024 (P = 32).
LOCATION_GRID = Bound("location_grid", 1, 32)
# Kosmos-2 has 1.6 B parameters; a config implying over 20 B is refused before anything is allocated.
MAX_PARAMETERS = 20_000_000_000


def whole_number(key: str, value: object, low: int, high: int) -> int:
    """``value`` as an int when it is a whole number in ``[low, high]``; ValueError naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"checkpoint config {key} is {value!r}: expected a whole number in {low}..{high}; "
            "the checkpoint is corrupt or not a Kosmos-2 model"
        )
    if not low <= value <= high:
        raise ValueError(
            f"checkpoint config {key} is {value:,}: expected {low}..{high:,}; "
            "the checkpoint is corrupt or not a Kosmos-2 model"
        )
    return value


def _lookup(config: Mapping, key: str, default: object) -> object:
    *parents, leaf = key.split(".")
    node: object = config
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node.get(leaf, default) if isinstance(node, Mapping) else default


def checked_sizes(config: Mapping, defaults: Mapping[str, int]) -> dict[str, int]:
    """Every bounded size of ``config`` (a config.json as a dict; missing keys take ``defaults``,
    transformers' own defaults), checked."""
    sizes = {}
    for bound in SIZE_BOUNDS:
        sizes[bound.key] = whole_number(
            bound.key, _lookup(config, bound.key, defaults[bound.key]), bound.low, bound.high
        )
    for width, heads in (
        ("text_config.embed_dim", "text_config.attention_heads"),
        ("vision_config.hidden_size", "vision_config.num_attention_heads"),
    ):
        if sizes[width] % sizes[heads]:
            raise ValueError(
                f"checkpoint config {width} {sizes[width]} is not a multiple of {heads} {sizes[heads]}"
            )
    if sizes["vision_config.patch_size"] > sizes["vision_config.image_size"]:
        raise ValueError("checkpoint config vision_config.patch_size is larger than its image_size")
    return sizes


def parameter_count(sizes: Mapping[str, int]) -> int:
    """About how many parameters these sizes build (attention and MLP weights, embeddings)."""
    d, ffn, layers = sizes["text_config.embed_dim"], sizes["text_config.ffn_dim"], sizes["text_config.layers"]
    h, inter = sizes["vision_config.hidden_size"], sizes["vision_config.intermediate_size"]
    patches = (sizes["vision_config.image_size"] // sizes["vision_config.patch_size"]) ** 2
    text = (
        layers * (4 * d * d + 2 * d * ffn)
        + (sizes["text_config.vocab_size"] + sizes["text_config.max_position_embeddings"]) * d
    )
    vision = sizes["vision_config.num_hidden_layers"] * (4 * h * h + 2 * h * inter) + (patches + 1) * h
    vision += sizes["vision_config.num_channels"] * h * sizes["vision_config.patch_size"] ** 2
    return text + vision + sizes["latent_query_num"] * d + h * d


def location_grid(value: object) -> int:
    """The checked location grid P of a checkpoint (config.json or training_config.json)."""
    return whole_number(LOCATION_GRID.key, value, LOCATION_GRID.low, LOCATION_GRID.high)


def check_config(config: Mapping, defaults: Mapping[str, int]) -> None:
    """ValueError (one line) unless every size of ``config`` is sane and together they are not too big."""
    sizes = checked_sizes(config, defaults)
    if (count := parameter_count(sizes)) > MAX_PARAMETERS:
        raise ValueError(
            f"checkpoint config describes a model of about {count:,} parameters, over the limit of "
            f"{MAX_PARAMETERS:,} (Kosmos-2 has 1.6 B); the checkpoint is corrupt or not a Kosmos-2 model"
        )
    if "location_grid" in config and config["location_grid"] is not None:
        location_grid(config["location_grid"])


def transformers_defaults() -> dict[str, int]:
    """The sizes transformers uses for keys a config.json leaves out."""
    from transformers.models.kosmos2.configuration_kosmos2 import (
        Kosmos2Config,
        Kosmos2TextConfig,
        Kosmos2VisionConfig,
    )

    sections = {"text_config": Kosmos2TextConfig(), "vision_config": Kosmos2VisionConfig()}
    top = Kosmos2Config()
    defaults = {}
    for bound in SIZE_BOUNDS:
        section, _, name = bound.key.rpartition(".")
        defaults[bound.key] = getattr(sections[section] if section else top, name)
    return defaults


def bounded_config(checkpoint, local: bool):
    """The checkpoint's ``Kosmos2Config``, every size checked (``config_bounds``) before a model exists.

    A local config.json is read as JSON first, so its values are judged as written (``1e400`` is
    infinite, ``7.9`` is no grid); the checked dict then becomes the config the model is built with.
    """
    from transformers import Kosmos2Config

    try:
        if local:
            raw = json.loads((Path(checkpoint) / "config.json").read_text())
            config = Kosmos2Config.from_dict(raw)
        else:
            config = Kosmos2Config.from_pretrained(checkpoint)
            raw = config.to_dict()
    except OSError as err:
        raise OSError(f"cannot load the checkpoint {checkpoint}: {str(err).splitlines()[0]}") from err
    except Exception as err:  # JSON or config errors
        raise ValueError(f"cannot read the config of checkpoint {checkpoint}: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{checkpoint}/config.json holds {type(raw).__name__}, expected a JSON object")
    check_config(raw, transformers_defaults())
    return config
