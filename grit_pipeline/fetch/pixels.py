"""Any decoded PIL image -> 8-bit RGB, and EXIF orientation -> the displayed frame.

Pixels leave this module as ``(height, width, 3)`` uint8 RGB arrays (OpenCV resamples and encodes
them without holding the GIL).

Every stored image and every image the detector sees goes through ``to_rgb8``: Pillow's own
``convert("RGB")`` clips 16-bit and float pixels (a 16-bit PNG comes out white or saturated) and
drops alpha onto black. The choices, per mode:

- 16-bit grey (``I;16*``, and ``I``, which Pillow uses for 16-bit grey from some formats): scaled
  by 255/65535 and rounded;
- float (``F``): taken as 0..1 (the usual convention for float images), scaled by 255 and clipped;
- alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, palettes with a transparent
  entry): composited on white, as img2dataset's Resizer does, so a transparent logo stays legible;
- ``CMYK``: Pillow's conversion, ``R = (255 - C) * (255 - K) / 255`` (Adobe's inverted CMYK JPEGs
  are un-inverted by Pillow's decoder); no ICC colour management;
- ``1``, ``L``, ``P``, ``YCbCr``, ``RGBX``: Pillow's conversion, which is exact for them.

16-bit RGB(A) PNGs are decoded to 8 bits per channel by Pillow itself (the high byte).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

WHITE = (255, 255, 255)
ORIENTATION_TAG = 0x0112  # EXIF "Orientation"
# EXIF orientation -> how the stored pixels become the displayed frame: 2 to 4 mirror or turn by
# 180 degrees, 5 to 8 swap the axes (the same transforms as PIL.ImageOps.exif_transpose).
_TURN = {
    2: lambda a: cv2.flip(a, 1),  # mirrored left-right
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),  # mirrored top-bottom
    5: cv2.transpose,  # mirrored along the main diagonal
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.flip(cv2.transpose(a), -1),  # mirrored along the other diagonal
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}
_SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_PIL_CONVERTS_EXACTLY = frozenset({"1", "L", "P", "YCbCr", "RGBX", "CMYK"})


class UnsupportedModeError(ValueError):
    """A pixel mode with no defined conversion to RGB (e.g. LAB, HSV)."""


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8) of an opened image; 1 when absent or out of range."""
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if value in _TURN else 1


def swaps_axes(orientation_value: int) -> bool:
    """True when the displayed frame is the stored frame turned by 90 degrees (5 to 8)."""
    return orientation_value >= 5


def displayed_size(size: tuple[int, int], orientation_value: int) -> tuple[int, int]:
    """(width, height) of the displayed frame, from the stored frame's size."""
    width, height = size
    return (height, width) if swaps_axes(orientation_value) else (width, height)


def to_displayed_frame(rgb: np.ndarray, orientation_value: int) -> np.ndarray:
    """Turn or flip stored pixels (an ``(h, w, 3)`` array) as the EXIF orientation says."""
    turn = _TURN.get(orientation_value)
    return rgb if turn is None else turn(rgb)


def rgb8_array(image: Image.Image) -> np.ndarray:
    """``image`` as an ``(h, w, 3)`` uint8 RGB array; see the module doc for each mode."""
    return np.asarray(to_rgb8(image))


def to_rgb8(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (the image itself when already RGB); see the module doc."""
    mode = image.mode
    if mode == "RGB":
        return image
    if (mode == "P" and "transparency" in image.info) or mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "La":
        image = image.convert("LA")
    elif mode in _SIXTEEN_BIT_GREY:
        image = _scaled_to_8bit(np.asarray(image).astype(np.float64) * (255 / 65535))
    elif mode == "F":
        image = _scaled_to_8bit(np.asarray(image, dtype=np.float64) * 255)
    if image.mode in ("RGBA", "LA"):
        return on_white(image)
    if image.mode in _PIL_CONVERTS_EXACTLY:
        return image.convert("RGB")
    raise UnsupportedModeError(f"no conversion to RGB for pixel mode {mode}")


def _scaled_to_8bit(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8), "L")


def on_white(image: Image.Image) -> Image.Image:
    """An image with alpha (``RGBA`` or ``LA``) composited on a white background, as RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
