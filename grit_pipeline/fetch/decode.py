"""Downloaded bytes -> a checked, decoded, resized ``FetchedImage``, on img2dataset's ``Resizer``.

The pixel count is read from the header before anything is decoded (decompression bombs); the
sha256 is of the bytes as downloaded, the width and height those of the original image.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from grit_pipeline.fetch.config import FetchConfig
from grit_pipeline.fetch.results import FetchedImage, FetchError, FetchFailure


def img2dataset_module(name: str):
    """``img2dataset.<name>``, imported on first use (img2dataset is heavy). It imports albumentations,
    which checks for updates over the network on import unless NO_ALBUMENTATIONS_UPDATE is set."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return importlib.import_module(f"img2dataset.{name}")


def _thread_safe_resizer_module():
    """img2dataset's resizer module, made safe to call from several threads at once.

    Its ``Resizer.__call__`` wraps decoding in ``SuppressStdoutStderr``, which swaps the process's
    file descriptors 1 and 2 with /dev/null and back: two threads doing that at once can leave
    stdout or stderr pointing at /dev/null for good, and every other thread's output (our progress
    lines, Beam's logs) is swallowed while it is active. We replace it with a no-op and silence
    OpenCV's own warnings instead; libjpeg may still print "Corrupt JPEG data" for broken files.
    Decoding in the download threads is what lets this stage use more than one core.
    """
    import contextlib

    import cv2

    resizer = img2dataset_module("resizer")
    resizer.SuppressStdoutStderr = contextlib.nullcontext
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return resizer


def make_resizer(config: FetchConfig):
    """img2dataset's Resizer for the configured policy; skip_reencode keeps bytes that need no change."""
    Resizer = _thread_safe_resizer_module().Resizer
    # Pillow warns above its own pixel limit while reading a header; ``check_header`` applies ours
    # (``max_pixels``) instead. Set once here: ``warnings.catch_warnings`` per call is not thread-safe.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

    return Resizer(
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        resize_only_if_bigger=config.resize_only_if_bigger,
        encode_format=config.encode_format,
        encode_quality=config.encode_quality,
        skip_reencode=True,
    )


def check_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the image header, without decoding pixels; rejects non-images and bombs."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as err:
        raise FetchError("too_many_pixels", str(err)) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise FetchError("not_an_image", f"cannot identify an image: {err}") from err
    if width * height > max_pixels:
        raise FetchError("too_many_pixels", f"{width}x{height} = {width * height} pixels > max {max_pixels}")
    return width, height


def decode(
    data: bytes, config: FetchConfig, resizer, original_size: tuple[int, int] | None = None
) -> FetchedImage:
    """Check, decode and resize downloaded bytes; ``original_size`` overrides the decoded size
    (img2dataset outputs hold resized bytes but record the original size)."""
    check_header(data, config.max_pixels)
    image, image_width, image_height, width, height, error = resizer(io.BytesIO(data))
    if error is not None:
        reason = "not_an_image" if "decod" in error.lower() else "resize_failed"
        raise FetchError(reason, error)
    if original_size and all(original_size):
        width, height = original_size
    sha256 = hashlib.sha256(data).hexdigest()
    return FetchedImage(image, width, height, image_width, image_height, sha256, source=data)


def open_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Encoded bytes -> an 8-bit RGB image in its displayed frame (EXIF orientation applied).

    With ``min_side``, a JPEG is decoded at the smallest DCT scale whose shortest side is still at
    least ``min_side`` (libjpeg's reduced-size decoding), which is much faster for large photos.
    """
    with Image.open(io.BytesIO(data)) as image:
        if min_side and image.format == "JPEG":
            width, height = image.size
            scale = min(width, height) / min_side
            if scale >= 2:
                image.draft("RGB", (max(1, round(width / scale)), max(1, round(height / scale))))
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


def decode_one(
    data: bytes, config: FetchConfig, resizer, slots, original_size=None
) -> FetchedImage | FetchFailure:
    """``decode`` with at most ``slots`` decodes at once: one per core, the rest of the threads wait
    on the network rather than contending for the GIL in the Resizer's Python parts."""
    try:
        with slots:
            return decode(data, config, resizer, original_size)
    except FetchError as err:
        return err.failure
