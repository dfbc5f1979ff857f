"""Grounding: noun-chunk character spans of a caption -> scored boxes in its image.

>>> from grit_pipeline.grounding import DetectorConfig, GroundingRequest, load_detector
>>> detector = load_detector(DetectorConfig())           # doctest: +SKIP
>>> [result] = detector.ground([GroundingRequest(image, caption, spans)])  # doctest: +SKIP

``result.boxes[i]`` holds the boxes of ``spans[i]`` that survived class-agnostic NMS and the score
threshold; ``result.reject_reason`` is ``no_box_above_threshold`` when none did.
``DetectorConfig(model=TINY_DETECTOR, box_threshold=0.5)`` loads a tiny random detector built in
code, for tests and offline smoke runs: its random token probabilities lie between about 0.3 and
0.7 (median 0.5), so the default threshold of 0.65 keeps few boxes and 0.5 keeps about half.
"""

from __future__ import annotations

from grit_pipeline.grounding.base import Detector, GroundingRequest, GroundingResult, ScoredBox
from grit_pipeline.grounding.config import (
    DEFAULT_DETECTOR,
    NO_BOX_ABOVE_THRESHOLD,
    OVER_TOKEN_LIMIT,
    SPAN_HAS_NO_TOKENS,
    TINY_DETECTOR,
    DetectorConfig,
    DetectorUnavailableError,
)


def load_detector(config: DetectorConfig | None = None) -> Detector:
    """Load the configured backend's weights once; raises ``DetectorUnavailableError`` (one line)."""
    config = config or DetectorConfig()
    if config.backend == "groundingdino":
        from grit_pipeline.grounding.official_backend import OfficialDetector

        return OfficialDetector(config)
    from grit_pipeline.grounding.hf_backend import HFDetector

    return HFDetector(config)


def save_tiny_detector(path, seed: int = 0):
    """Write the tiny random detector (model + processor) to ``path``; deterministic per seed."""
    from grit_pipeline.grounding.tiny import save_tiny_detector as save

    return save(path, seed=seed)


__all__ = [
    "DEFAULT_DETECTOR",
    "NO_BOX_ABOVE_THRESHOLD",
    "OVER_TOKEN_LIMIT",
    "SPAN_HAS_NO_TOKENS",
    "TINY_DETECTOR",
    "Detector",
    "DetectorConfig",
    "DetectorUnavailableError",
    "GroundingRequest",
    "GroundingResult",
    "ScoredBox",
    "load_detector",
    "save_tiny_detector",
]
