"""A detector to measure without downloading one: the real grounding-dino-tiny architecture (Swin-T
backbone, BERT-base text encoder, d_model 256, 6 + 6 layers, 900 queries: the hub config of
IDEA-Research/grounding-dino-tiny) with random weights, built in code; requests for it; timings
of its forward and of ``HFDetector.ground``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from grit_pipeline.grounding import DetectorConfig, GroundingRequest
from grit_pipeline.grounding.hf_backend import HFDetector
from grit_pipeline.grounding.tiny import build_tokenizer
from grit_pipeline.text import CharSpan

CAPTIONS = [
    ("a dog chasing a red ball on the grass", ["a dog", "a red ball", "the grass"]),
    ("two people riding bikes on a street in the city", ["two people", "bikes", "a street", "the city"]),
    ("a cup of coffee on a wooden table", ["a cup", "coffee", "a wooden table"]),
    ("a man holding an umbrella in the rain", ["a man", "an umbrella", "the rain"]),
    ("a white cat sitting on a sofa near a window", ["a white cat", "a sofa", "a window"]),
    ("a plate of food with bread and salad", ["a plate", "food", "bread", "salad"]),
]


def grounding_dino_tiny_config():
    """The architecture of IDEA-Research/grounding-dino-tiny (its hub config.json), written out."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        image_size=224,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    return GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=256,
        encoder_layers=6,
        decoder_layers=6,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        num_queries=900,
        num_feature_levels=4,
        max_text_len=256,
        two_stage=True,
    )


def build_detector(image_side: int, max_side: int, device: str, config=None) -> HFDetector:
    """Random weights of ``config`` (default: grounding-dino-tiny's architecture) and its processor,
    resizing to ``image_side`` on the shortest edge (at most ``max_side``), on ``device``."""
    from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config or grounding_dino_tiny_config())
    size = {"shortest_edge": image_side, "longest_edge": max_side}
    # Our small caption vocabulary keeps bert-base's special ids; the text length is what matters here.
    tokenizer = build_tokenizer(Path(tempfile.mkdtemp(prefix="grit-bench-vocab-")))
    processor = GroundingDinoProcessor(GroundingDinoImageProcessorPil(size=size), tokenizer)
    config = DetectorConfig(model="grounding-dino-tiny-architecture", device=device, batch_size=16)
    return HFDetector(config, processor=processor, model=model)


def make_requests(count: int) -> list[GroundingRequest]:
    """``count`` requests: random-pixel 640x480 images, ``CAPTIONS`` and their chunks in rotation."""
    rng = np.random.default_rng(0)
    requests = []
    for i in range(count):
        caption, chunks = CAPTIONS[i % len(CAPTIONS)]
        spans = tuple(CharSpan(caption.find(c), caption.find(c) + len(c)) for c in chunks)
        image = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        requests.append(GroundingRequest(image, caption, spans))
    return requests


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_raw(detector: HFDetector, batch) -> float:
    """Seconds of the model's forward alone, on inputs encoded beforehand (untimed)."""
    inputs, _, _ = detector.encode(batch)
    sync(detector.device)
    start = time.perf_counter()
    with torch.inference_mode(), detector._autocast():
        detector.model(**inputs)
    sync(detector.device)
    return time.perf_counter() - start


def time_wrapper(detector: HFDetector, batch) -> float:
    """Seconds of ``detector.ground(batch)``: everything from requests to per-span boxes."""
    sync(detector.device)
    start = time.perf_counter()
    detector.ground(batch)
    sync(detector.device)
    return time.perf_counter() - start
