"""Images for the model: centre crop with boxes re-projected (training) or square resize (evaluation).

Kosmos-2's training loader resized the shorter side and centre-cropped, re-projecting each box
into the crop and dropping it when less than 20 % of its area survives; evaluation and the
transformers processor resize the whole image to a square instead (docs/grit.md section 3).

>>> window = centre_window(200, 100)
>>> window
Window(x_min=0.25, y_min=0.0, x_max=0.75, y_max=1.0)
>>> window.project(Box(0.25, 0.0, 0.5, 1.0))
Box(x_min=0.0, y_min=0.0, x_max=0.5, y_max=1.0)
>>> window.project(Box(0.0, 0.0, 0.26, 1.0)) is None   # only 4 % of the box is inside the crop
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from grit_pipeline.fetch.config import FetchConfig
from grit_pipeline.fetch.formats import check_pixel_count, open_header
from grit_pipeline.fetch.results import FetchError
from grit_pipeline.locations import Box

CROP_MODES = ("centre-crop", "square")
MIN_VISIBLE_FRACTION = 0.2  # the original loader's rule: drop a box when < 20 % of its area is in the crop


@dataclass(frozen=True)
class Window:
    """The part of the original image the model sees, in the original's normalised coordinates."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def project(self, box: Box, min_visible: float = MIN_VISIBLE_FRACTION) -> Box | None:
        """``box`` in the window's normalised coordinates, or None when too little of it is inside."""
        clipped = Box(
            max(box.x_min, self.x_min),
            max(box.y_min, self.y_min),
            min(box.x_max, self.x_max),
            min(box.y_max, self.y_max),
        )
        if box.area <= 0 or clipped.area / box.area < min_visible:
            return None
        width, height = self.x_max - self.x_min, self.y_max - self.y_min
        return Box(
            (clipped.x_min - self.x_min) / width,
            (clipped.y_min - self.y_min) / height,
            (clipped.x_max - self.x_min) / width,
            (clipped.y_max - self.y_min) / height,
        )


FULL_WINDOW = Window(0.0, 0.0, 1.0, 1.0)


def centre_window(width: int, height: int) -> Window:
    """The centred square of side min(width, height), in whole pixels as a centre crop takes it."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return Window(left / width, top / height, (left + side) / width, (top + side) / height)


def window_for(mode: str, width: int, height: int) -> Window:
    if mode == "centre-crop":
        return centre_window(width, height)
    if mode == "square":
        return FULL_WINDOW
    raise ValueError(f"unknown image mode {mode!r}; choose one of {CROP_MODES}")


def decode_image(data: bytes) -> Image.Image:
    """RGB image from encoded bytes; raises ValueError on undecodable data, on formats the build
    does not decode (``fetch.formats``) and on images over the build's pixel limit."""
    try:  # the fetch stage's allow-list of formats and its pixel limit, read before decoding
        image = open_header(data, FetchConfig.max_pixels)
        check_pixel_count(*image.size, FetchConfig.max_pixels)
        return image.convert("RGB")
    except FetchError as err:
        raise ValueError(f"undecodable image ({len(data)} bytes): {err.failure.reason}: {err}") from err
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"undecodable image ({len(data)} bytes): {err}") from err


def render(image: Image.Image, window: Window, size: int) -> Image.Image:
    """The window of ``image`` resized (bicubic) to a ``size`` x ``size`` square."""
    box = (
        round(window.x_min * image.width),
        round(window.y_min * image.height),
        round(window.x_max * image.width),
        round(window.y_max * image.height),
    )
    if box != (0, 0, image.width, image.height):
        image = image.crop(box)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def to_pixel_values(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, H, W) float32, scaled to [0, 1] and normalised as the CLIP image processor does."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))
