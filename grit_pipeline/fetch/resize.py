"""The resize policy (img2dataset's semantics), DCT scale choice, resampling and encoding.

Sizes and encoding follow img2dataset's Resizer exactly: ``keep_ratio`` scales the shortest side to
``image_size`` (``keep_ratio_largest`` the longest), each side ``max(1, round(side * scale))``;
with ``resize_only_if_bigger`` nothing smaller is scaled up; OpenCV encodes with the configured
quality. The pixels are an exact area average of the original, as img2dataset's ``INTER_AREA``
makes them; what differs is how much is decoded (``benchmarks/fetch_quality.py`` measures both
against an exact area average on real photos):

- a JPEG at least ``STORED_DCT_GAP`` (3) times its target at 1/2, 1/4 or 1/8 scale is decoded by
  libjpeg at that reduced scale (DCT scaling), the largest that keeps that margin. libjpeg's reduced
  IDCT is not an area average: left closer than about 2.5x to the target it cost 0.3 to 3.4 dB on
  real photos, at 3x and above at most 0.15 dB;
- everything then goes through ``area.area_reduce`` (exact area average at any factor, the numbers
  OpenCV's ``INTER_AREA`` gives, about three times as fast), with a reduced-scale decode's partial last
  block weighted by the part of it the picture covers;
- up-scaling (``resize_only_if_bigger=False``) uses Lanczos, as img2dataset does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from grit_pipeline.fetch.area import area_reduce
from grit_pipeline.fetch.config import FetchConfig

# Our encode_format -> (Pillow's format name, which may be stored as is; OpenCV's quality flag).
_FORMATS = {
    "jpg": ("JPEG", cv2.IMWRITE_JPEG_QUALITY),
    "png": ("PNG", cv2.IMWRITE_PNG_COMPRESSION),  # img2dataset: for PNG, quality is the compression level
    "webp": ("WEBP", cv2.IMWRITE_WEBP_QUALITY),
}
DCT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg decodes at
# How many times its target a reduced-scale decode of a stored image must stay (module doc; the
# detector's input, resampled again by its processor, takes any scale that covers it: gap 1).
STORED_DCT_GAP = 3


@dataclass(frozen=True)
class ResizePolicy:
    """Target sizes and the stored encoding, from a FetchConfig (see the module doc)."""

    image_size: int
    resize_mode: str
    resize_only_if_bigger: bool
    encode_format: str
    encode_quality: int

    @classmethod
    def from_config(cls, config: FetchConfig) -> ResizePolicy:
        if config.encode_format not in _FORMATS:
            raise ValueError(f"encode format {config.encode_format!r}: expected one of {', '.join(_FORMATS)}")
        return cls(
            config.image_size,
            config.resize_mode,
            config.resize_only_if_bigger,
            config.encode_format,
            config.encode_quality,
        )

    def target_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The stored (width, height) for an image of ``width x height``, or None: keeps its size."""
        if self.resize_mode == "no":
            return None
        side = min(width, height) if self.resize_mode == "keep_ratio" else max(width, height)
        if side == self.image_size or (self.resize_only_if_bigger and side < self.image_size):
            return None
        scale = self.image_size / side
        return max(1, round(width * scale)), max(1, round(height * scale))

    def stores_format(self, image_format: str | None) -> bool:
        """True when bytes in ``image_format`` (Pillow's name) are already in the stored encoding."""
        return image_format == _FORMATS[self.encode_format][0]

    def encode(self, rgb: np.ndarray) -> bytes:
        """An ``(h, w, 3)`` RGB array -> bytes in the stored encoding (no EXIF, so no orientation tag)."""
        flag = _FORMATS[self.encode_format][1]
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(f".{self.encode_format}", bgr, [int(flag), self.encode_quality])
        if not ok:
            raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {self.encode_format}")
        return encoded.tobytes()


def dct_scale(size: tuple[int, int], wanted: tuple[int, int], gap: float = 1) -> int:
    """The largest libjpeg reduction (8, 4, 2 or 1) that keeps ``size`` at least ``gap`` times
    ``wanted`` on both sides."""
    room = min(size[0] / max(1, wanted[0]), size[1] / max(1, wanted[1])) / gap
    return next((scale for scale in DCT_SCALES if room >= scale), 1)  # room < 1: up-scaling


def resample(rgb: np.ndarray, size: tuple[int, int], extent: tuple[float, float] | None = None) -> np.ndarray:
    """An ``(h, w, 3)`` array resized to exactly ``size`` (width, height): an exact area average
    when reducing (``area.area_reduce``, what ``INTER_AREA`` computes), Lanczos when enlarging
    (img2dataset's choices).

    ``extent``: the (width, height) in ``rgb``'s pixels that the picture covers, when not all of it
    (libjpeg pads the last block at a reduced scale: 1001 px at 1/8 decode to 126 px covering
    125.125); the area average then spans exactly the extent, the last pixel weighted by its share.
    """
    height, width = rgb.shape[:2]
    extent = extent or (width, height)
    if (width, height) == size and extent == (width, height):
        return rgb
    if min(extent[0] / size[0], extent[1] / size[1]) < 1:
        return cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)
    return area_reduce(rgb, size, extent)
