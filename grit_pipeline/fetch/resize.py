"""The resize policy (img2dataset's semantics), DCT scale choice, resampling and encoding.

Sizes and encoding follow img2dataset's Resizer exactly: ``keep_ratio`` scales the shortest side to
``image_size`` (``keep_ratio_largest`` the longest), each side ``max(1, round(side * scale))``;
with ``resize_only_if_bigger`` nothing smaller is scaled up; OpenCV encodes with the configured
quality. What differs is how the pixels get there, for speed at the same quality
(benchmarks/fetch.py reports PSNR against img2dataset):

- a JPEG whose target is at most half its size is decoded by libjpeg at 1/2, 1/4 or 1/8 scale
  (DCT scaling), the largest reduction that stays at least as big as the target;
- the remaining reduction, below 2x for a JPEG, is a 3x3 Gaussian pre-filter (sigma
  ``0.37 * sqrt(factor**2 - 1)``) and a bilinear resample, a fraction of the time of img2dataset's
  ``INTER_AREA`` at a non-integer factor; exact integer factors use ``INTER_AREA`` itself;
- up-scaling (``resize_only_if_bigger=False``) uses Lanczos, as img2dataset does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from grit_pipeline.fetch.config import FetchConfig

# Our encode_format -> (Pillow's format name, which may be stored as is; OpenCV's quality flag).
_FORMATS = {
    "jpg": ("JPEG", cv2.IMWRITE_JPEG_QUALITY),
    "png": ("PNG", cv2.IMWRITE_PNG_COMPRESSION),  # img2dataset: for PNG, quality is the compression level
    "webp": ("WEBP", cv2.IMWRITE_WEBP_QUALITY),
}
DCT_SCALES = (8, 4, 2, 1)  # the reductions libjpeg decodes at
# Gaussian pre-filter before the bilinear step, sigma = _ANTI_ALIAS * sqrt(factor**2 - 1) source
# pixels: fitted to an exact area average on photo-like images at factors 1.25 to 1.9 (44 dB at
# 1.875, against 37 dB for bilinear alone; benchmarks/fetch.py prints the PSNR of what is stored).
_ANTI_ALIAS = 0.37


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


def dct_scale(size: tuple[int, int], wanted: tuple[int, int]) -> int:
    """The largest libjpeg reduction (8, 4, 2 or 1) that keeps ``size`` at least ``wanted``."""
    room = min(size[0] // max(1, wanted[0]), size[1] // max(1, wanted[1]))
    return next((scale for scale in DCT_SCALES if room >= scale), 1)  # room 0: up-scaling


def resample(rgb: np.ndarray, size: tuple[int, int], extent: tuple[float, float] | None = None) -> np.ndarray:
    """An ``(h, w, 3)`` array resized to exactly ``size`` (width, height); see the module doc.

    ``extent``: the (width, height) in ``rgb``'s pixels that the picture covers, when not all of it
    (libjpeg pads the last block at a reduced scale: 1001 px at 1/8 decode to 126 px covering 125.125).
    """
    height, width = rgb.shape[:2]
    extent = extent or (width, height)
    if (width, height) == size and extent == (width, height):
        return rgb
    factor = min(extent[0] / size[0], extent[1] / size[1])
    exact = extent == (width, height)
    if factor < 1:
        return cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)
    if exact and factor == int(factor):
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    if factor > 2:  # not decoded at a reduced scale (not a JPEG): the integer part first
        whole = int(factor)
        reduced = (max(size[0], width // whole), max(size[1], height // whole))
        extent = (extent[0] * reduced[0] / width, extent[1] * reduced[1] / height)
        rgb = cv2.resize(rgb, reduced, interpolation=cv2.INTER_AREA)
        factor = min(extent[0] / size[0], extent[1] / size[1])
    sigma = _ANTI_ALIAS * math.sqrt(factor**2 - 1)
    if sigma > 0.05:  # below that the filter would change nothing visible
        rgb = cv2.GaussianBlur(rgb, (3, 3), sigma)
    if exact:
        return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    scale_x, scale_y = (
        extent[0] / size[0],
        extent[1] / size[1],
    )  # output pixel -> source pixels, centres aligned
    matrix = np.array([[scale_x, 0, (scale_x - 1) / 2], [0, scale_y, (scale_y - 1) / 2]])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(rgb, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
