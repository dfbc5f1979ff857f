"""img2dataset's stored images put back into the original frame, so boxes mean what the row says.

Rows record the original width and height and boxes normalised by them; img2dataset records the
original size too, but not how it resized (its ``resize_mode``):

- ``keep_ratio``, ``keep_ratio_largest``, ``no`` (and any image it left alone): the whole picture,
  scaled; nothing to do.
- ``border`` (img2dataset's default): scaled so the longest side is ``image_size``, then padded
  with white to a square. The padding is cut off, so the detector sees only the picture.
- ``center_crop``: scaled so the shortest side is ``image_size``, then the central square kept.
  The square goes back to its known window in a canvas the size of the scaled original, the parts
  img2dataset cut away filled with mid-grey: boxes are then in the original frame, the stored image
  has the original's aspect, and a centre crop (the trainer's default) sees exactly the kept square.

Sizes alone cannot tell ``border`` from ``center_crop`` for a square image of a non-square
original; ``--img2dataset-resize-mode`` says which, and under ``auto`` such rows are rejected
(``unknown_resize_geometry``) rather than given boxes in the wrong frame.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from grit_pipeline.fetch.formats import open_header

FILL_RGB = (128, 128, 128)
RESTORED_JPEG_QUALITY = 95
WHITE_MIN = 235  # darkest grey level JPEG (quality 95) leaves in img2dataset's white (255) padding  # what img2dataset's centre crop cut away: unknown, drawn mid-grey
WHOLE_PICTURE_MODES = ("keep_ratio", "keep_ratio_largest", "no")


@dataclass(frozen=True)
class Restore:
    """How a stored image becomes one of the original frame (in the stored image's pixels)."""

    crop: tuple[int, int, int, int] | None = None  # border: keep this (left, top, right, bottom)
    canvas: tuple[int, int] | None = None  # center_crop: paste into a canvas of this (width, height)
    offset: tuple[int, int] = (0, 0)  # ... with the stored image's top-left corner here


def same_aspect(size: tuple[int, int], original: tuple[int, int]) -> bool:
    """Whether ``size`` is ``original`` scaled, each side rounded to whole pixels (as grit validate allows)."""
    (w, h), (ow, oh) = size, original
    return abs(w * oh - h * ow) <= 0.5 * (ow + oh) + 1e-6


def _scaled(original: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(original[0] * scale)), max(1, round(original[1] * scale))  # as albumentations


def plan_restore(original: tuple[int, int], stored: tuple[int, int], mode: str) -> Restore | str:
    """How to undo img2dataset's ``mode`` on an image stored at ``stored`` pixels, or why it cannot be done.

    >>> plan_restore((400, 300), (256, 256), "border")  # letterboxed: 32 px of padding top and bottom
    Restore(crop=(0, 32, 256, 224), canvas=None, offset=(0, 0))
    >>> plan_restore((400, 300), (256, 256), "center_crop")  # the middle 256 of a 341 x 256 picture
    Restore(crop=None, canvas=(341, 256), offset=(42, 0))
    >>> plan_restore((400, 300), (256, 192), "auto")  # keep_ratio: the whole picture
    Restore(crop=None, canvas=None, offset=(0, 0))
    >>> plan_restore((400, 300), (256, 256), "auto")[:60]
    'a 256x256 image of a 400x300 original: img2dataset padded it'
    """
    if same_aspect(stored, original):
        return Restore()
    square = stored[0] == stored[1]
    if mode == "border" and square:
        side = stored[0]
        width, height = _scaled(original, side / max(original))
        left, top = (side - width) // 2, (side - height) // 2
        return Restore(crop=(left, top, left + width, top + height))
    if mode == "center_crop" and square:
        side = stored[0]
        canvas = _scaled(original, side / min(original))
        return Restore(canvas=canvas, offset=((canvas[0] - side) // 2, (canvas[1] - side) // 2))
    described = f"a {stored[0]}x{stored[1]} image of a {original[0]}x{original[1]} original"
    if mode == "auto" and square:
        return (
            f"{described}: img2dataset padded it (border, its default) or cropped it (center_crop), "
            "and the sizes cannot tell which; say so with --img2dataset-resize-mode border|center_crop"
        )
    return f"{described} is not what img2dataset's {mode} resize mode makes; check --img2dataset-resize-mode"


def padding_is_white(image: Image.Image, content: tuple[int, int, int, int]) -> bool:
    """Whether what lies outside ``content`` is img2dataset's white border (JPEG leaves it near-white).

    A declared ``border`` on an image img2dataset centre-cropped would otherwise go unnoticed.
    Pixels within 2 of the content's edge are left out: JPEG blurs the edge into them.
    """
    grey = image.convert("L")
    left, top, right, bottom = content
    strips = [(0, 0, grey.width, top - 2), (0, bottom + 2, grey.width, grey.height)]
    strips += [(0, 0, left - 2, grey.height), (right + 2, 0, grey.width, grey.height)]
    for box in strips:
        if box[2] > box[0] and box[3] > box[1] and grey.crop(box).getextrema()[0] < WHITE_MIN:
            return False
    return True


def restore_frame(data: bytes, plan: Restore) -> bytes | None:
    """The stored image's bytes in the original frame, or None when a ``border`` plan finds no white
    border where the padding should be.

    Encoded as JPEG at quality 95 (the fetch stage's default): that is the one lossy encode, since
    the fetch stage keeps JPEG bytes it need not resize, and rows stay light through the shuffles.
    """
    if plan.crop is None and plan.canvas is None:
        return data
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if plan.crop is not None:
            if not padding_is_white(image, plan.crop):
                return None
            image = image.crop(plan.crop)
        else:
            canvas = Image.new("RGB", plan.canvas, FILL_RGB)
            canvas.paste(image, plan.offset)
            image = canvas
    out = io.BytesIO()
    image.save(out, "JPEG", quality=RESTORED_JPEG_QUALITY)
    return out.getvalue()


def stored_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image header (no pixels decoded); None when it is not an image."""
    try:  # only the decoded formats are opened (an ICO would decode inside ``Image.open``)
        with open_header(data, max_pixels=2**62) as image:
            return image.size
    except Exception:  # not an image or not a decoded format: the fetch stage rejects it with a reason
        return None
