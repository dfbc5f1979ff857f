"""img2dataset's stored images put back into the original frame, so boxes mean what the row says.

Rows record the original width and height and boxes normalised by them; img2dataset records the
original size too, but not how it resized (its ``resize_mode``). What its ``Resizer`` does:

- ``keep_ratio``, ``keep_ratio_largest``, ``no`` (and any image it left alone): the whole picture,
  scaled; nothing to do.
- ``border`` (its default): ``LongestMaxSize`` to ``image_size``, then ``PadIfNeeded`` to a square
  with white (255, 255, 255), split evenly (the odd pixel at the bottom or right). The padding is
  cut off, so the detector sees only the picture.
- ``center_crop``: ``SmallestMaxSize`` to ``image_size``, then the central square kept. The square
  goes back to its known window in a canvas the size of the scaled original, the parts img2dataset
  cut away filled with mid-grey: boxes are then in the original frame, the stored image has the
  original's aspect, and a centre crop (the trainer's default) sees exactly the kept square.

Sizes alone cannot tell ``border`` from ``center_crop`` for a square image of a non-square
original, so the pixels are asked (``read_border``): where ``border`` would have put its padding,
is there img2dataset's white, as its JPEG encoding leaves it, and does the picture reach that line?
Under ``--img2dataset-resize-mode auto``, padding with the picture at its edge is ``border``, no
padding is ``center_crop``, and white there with white inside too (a white-background product shot,
a white sky) fits both and is rejected (``unknown_resize_geometry``, naming the option) rather than
given boxes in a guessed frame. A declared mode is checked the same way: ``border`` needs its
padding, ``center_crop`` is refused where the image shows ``border``'s.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, JpegImagePlugin

from grit_pipeline.fetch.formats import open_header

FILL_RGB = (128, 128, 128)  # what img2dataset's centre crop cut away: unknown, drawn mid-grey
PAD_RGB = (255, 255, 255)  # img2dataset's PadIfNeeded value in border mode
RESTORED_JPEG_QUALITY = 95
WHOLE_PICTURE_MODES = ("keep_ratio", "keep_ratio_largest", "no")
# Padding test: the stored padding against white padding put through the same JPEG encoding. The
# two differ by JPEG noise only: under 1 level on average and 30 at most (img2dataset's output of
# real photos at quality 75 and 95, next to the picture's edge); picture content, even a bright
# sky, is further from 255 on average, and anything more than PADDING_MAX_LEVELS off is not padding.
PADDING_MEAN_LEVELS = 2.0
PADDING_MAX_LEVELS = 64
# Edge test: border pads a picture that ends at the padding line, and a photo has content along
# its whole edge; so on every padded side the picture's first two lines must hold content (not
# white) in at least EDGE_SHARE of their pixels (real photos: 0.94 and up). A centre-cropped white
# product shot whose object happens to end on that line does so on one side (0.46 at most, measured).
EDGE_LINES = 2
EDGE_LEVELS = 24
EDGE_SHARE = 0.5
OPTION_HINT = "pass --img2dataset-resize-mode with the resize_mode img2dataset ran with (border, its default, or center_crop)"


@dataclass(frozen=True)
class Restore:
    """How a stored image becomes one of the original frame (in the stored image's pixels)."""

    crop: tuple[int, int, int, int] | None = None  # border: keep this (left, top, right, bottom)
    canvas: tuple[int, int] | None = None  # center_crop: paste into a canvas of this (width, height)
    offset: tuple[int, int] = (0, 0)  # ... with the stored image's top-left corner here


@dataclass(frozen=True)
class BorderReading:
    """What the pixels say about ``border`` padding where img2dataset would have put it."""

    padded: bool  # outside the picture's box lies img2dataset's white padding, as JPEG left it
    sides: int  # padded sides (two: top and bottom, or left and right)
    sides_with_picture: int  # ... along which the picture reaches the padding line

    @property
    def border(self) -> bool:
        """Padding, and a picture that ends exactly at it on every side: img2dataset's border."""
        return self.padded and self.sides_with_picture == self.sides

    @property
    def shows_border(self) -> bool:
        """Padding, and a picture ending at it on one side at least (a white sky may fill the other)."""
        return self.padded and self.sides_with_picture > 0


def same_aspect(size: tuple[int, int], original: tuple[int, int]) -> bool:
    """Whether ``size`` is ``original`` scaled, each side rounded to whole pixels (as grit validate allows)."""
    (w, h), (ow, oh) = size, original
    return abs(w * oh - h * ow) <= 0.5 * (ow + oh) + 1e-6


def _scaled(original: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(original[0] * scale)), max(1, round(original[1] * scale))  # as albumentations


def border_plan(original: tuple[int, int], side: int) -> Restore:
    """``border``'s picture box in a ``side`` x ``side`` image: scaled by the longest side, centred."""
    width, height = _scaled(original, side / max(original))
    left, top = (side - width) // 2, (side - height) // 2
    return Restore(crop=(left, top, left + width, top + height))


def center_crop_plan(original: tuple[int, int], side: int) -> Restore:
    """``center_crop``'s window: the stored square in the middle of the original scaled by its shortest side."""
    canvas = _scaled(original, side / min(original))
    return Restore(canvas=canvas, offset=((canvas[0] - side) // 2, (canvas[1] - side) // 2))


def _describe(stored: tuple[int, int], original: tuple[int, int]) -> str:
    return f"a {stored[0]}x{stored[1]} image of a {original[0]}x{original[1]} original"


def _reencoded_with_white_padding(image: Image.Image, pixels: np.ndarray, crop) -> np.ndarray:
    """The stored picture in white padding, through the stored JPEG's own tables (if it is a JPEG)."""
    left, top, right, bottom = crop
    padded = np.full_like(pixels, 255)
    padded[top:bottom, left:right] = pixels[top:bottom, left:right]
    tables = getattr(image, "quantization", None)
    if image.format != "JPEG" or not tables:
        return padded  # PNG is lossless; other formats are compared with plain white
    out = io.BytesIO()
    sampling = JpegImagePlugin.get_sampling(image)
    Image.fromarray(padded).save(out, "JPEG", qtables=tables, subsampling=max(sampling, 0))
    return np.asarray(Image.open(out).convert("RGB"))


def _padding_mask(shape: tuple[int, int], crop) -> np.ndarray:
    left, top, right, bottom = crop
    mask = np.ones(shape, bool)
    mask[top:bottom, left:right] = False
    return mask


def _edge_lines(pixels: np.ndarray, crop) -> list[np.ndarray]:
    """The picture's first ``EDGE_LINES`` lines along each side that has padding."""
    left, top, right, bottom = crop
    height, width = pixels.shape[:2]
    inner = pixels[top:bottom, left:right]
    lines = []
    if top > 0:
        lines.append(inner[:EDGE_LINES])
    if bottom < height:
        lines.append(inner[-EDGE_LINES:])
    if left > 0:
        lines.append(inner[:, :EDGE_LINES])
    if right < width:
        lines.append(inner[:, -EDGE_LINES:])
    return lines


def read_border(image: Image.Image, crop: tuple[int, int, int, int]) -> BorderReading:
    """Does ``image`` hold img2dataset's white padding outside ``crop``, with the picture at its edge?"""
    pixels = np.asarray(image.convert("RGB"))
    expected = _reencoded_with_white_padding(image, pixels, crop)
    mask = _padding_mask(pixels.shape[:2], crop)
    error = np.abs(pixels[mask].astype(np.int16) - expected[mask]).max(axis=-1)
    padded = bool(error.size and error.mean() <= PADDING_MEAN_LEVELS and error.max() <= PADDING_MAX_LEVELS)
    lines = _edge_lines(pixels, crop)
    with_picture = sum(
        ((255 - line.astype(np.int16)).max(axis=-1) > EDGE_LEVELS).mean() >= EDGE_SHARE for line in lines
    )
    return BorderReading(padded=padded, sides=len(lines), sides_with_picture=int(with_picture))


def plan_restore(image: Image.Image, original: tuple[int, int], mode: str) -> Restore | str:
    """How to undo img2dataset's ``mode`` on ``image`` (its stored pixels), or why it cannot be done.

    ``mode`` is ``--img2dataset-resize-mode``: one of img2dataset's, or ``auto`` (read the pixels).
    """
    stored = image.size
    if same_aspect(stored, original):
        return Restore()
    described = _describe(stored, original)
    if stored[0] != stored[1] or mode in WHOLE_PICTURE_MODES:
        return (
            f"{described} is not what img2dataset's {mode} resize mode makes; check --img2dataset-resize-mode"
        )
    border = border_plan(original, stored[0])
    reading = read_border(image, border.crop)
    if mode == "border":
        if reading.padded:
            return border
        return (
            f"--img2dataset-resize-mode border, but {described} has no white padding where img2dataset "
            "puts it: was it center_crop? pass --img2dataset-resize-mode center_crop or auto"
        )
    if mode == "center_crop":
        if not reading.shows_border:
            return center_crop_plan(original, stored[0])
        return (
            f"--img2dataset-resize-mode center_crop, but {described} shows img2dataset's white border "
            "padding: pass --img2dataset-resize-mode border or auto"
        )
    if reading.border:
        return border
    if not reading.padded:
        return center_crop_plan(original, stored[0])
    return (
        f"{described}: white where img2dataset's border padding would be and inside the picture too, "
        f"so its pixels fit both border and center_crop; {OPTION_HINT}"
    )


def apply_restore(image: Image.Image, plan: Restore) -> Image.Image:
    """``image`` in the original frame: the picture cut out of its padding, or the crop placed in its canvas."""
    image = image.convert("RGB")
    if plan.crop is not None:
        return image.crop(plan.crop)
    canvas = Image.new("RGB", plan.canvas, FILL_RGB)
    canvas.paste(image, plan.offset)
    return canvas


def restore_frame(data: bytes, original: tuple[int, int], mode: str) -> bytes | str:
    """img2dataset's stored bytes in the original frame, or why not (a one-line reason).

    Encoded as JPEG at quality 95 (the fetch stage's default) when something was undone: that is the
    one lossy encode, since the fetch stage keeps JPEG bytes it need not resize, and rows stay light
    through the shuffles. Bytes that are not an image pass through (the fetch stage rejects them).
    """
    try:  # only the decoded formats are opened (an ICO would decode inside ``Image.open``)
        image = open_header(data, max_pixels=2**62)
        if same_aspect(image.size, original):
            return data  # nothing to undo: the pixels are not decoded here
        image.load()
    except Exception:  # PIL raises many types for bad bytes; the fetch stage rejects them with a reason
        return data
    plan = plan_restore(image, original, mode)
    if isinstance(plan, str):
        return plan
    if plan.crop is None and plan.canvas is None:
        return data
    out = io.BytesIO()
    apply_restore(image, plan).save(out, "JPEG", quality=RESTORED_JPEG_QUALITY)
    return out.getvalue()
