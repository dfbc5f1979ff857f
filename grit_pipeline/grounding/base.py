"""The detector interface every grounding backend implements, and its plain-value records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

if TYPE_CHECKING:
    from grit_pipeline.grounding.preprocess import PreparedImage

from grit_pipeline.grounding.config import NO_BOX_ABOVE_THRESHOLD
from grit_pipeline.locations import Box
from grit_pipeline.text import CharSpan


@dataclass(frozen=True)
class ScoredBox:
    """A normalised box and the confidence that it shows one noun chunk."""

    box: Box
    score: float


@dataclass(frozen=True)
class GroundingRequest:
    """One image, its caption (the detector's prompt) and the noun-chunk spans to ground in it.

    ``image`` is a PIL image, or (hf backend) a ``preprocess.PreparedImage`` already resized for it.
    """

    image: Image.Image | PreparedImage
    caption: str
    spans: tuple[CharSpan, ...]


@dataclass(frozen=True)
class GroundingResult:
    """Per span of the request (same order): the boxes that survived NMS and the score threshold.

    ``span_errors`` maps a span index to a reason when that span could not be scored at all
    (for example ``over_token_limit``); such a span has no boxes.
    """

    boxes: tuple[tuple[ScoredBox, ...], ...]
    span_errors: dict[int, str] = field(default_factory=dict)

    @property
    def has_box(self) -> bool:
        return any(self.boxes)

    @property
    def reject_reason(self) -> str | None:
        """``no_box_above_threshold`` when no span kept a box (the image-caption pair is dropped)."""
        return None if self.has_box else NO_BOX_ABOVE_THRESHOLD


class Detector(Protocol):
    """A grounding backend: batched, heavy state loaded in the constructor."""

    def ground(self, requests: Sequence[GroundingRequest]) -> list[GroundingResult]:
        """One result per request, in order."""
        ...

    def image_from_bytes(self, data: bytes):
        """Encoded bytes -> the image in the form ``ground`` takes fastest (a request's ``image``)."""
        ...

    def provenance(self) -> dict:
        """Model id, backend, thresholds and NMS IoU, for shard metadata and the run manifest."""
        ...
