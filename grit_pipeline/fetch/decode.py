"""Downloaded bytes -> a checked ``FetchedImage``: 8-bit RGB, in the displayed frame, resized once.

Only the formats of ``formats`` are opened (others are ``unsupported_format``), each by its own
Pillow plugin. The header is read before any pixel is decoded: the pixel count (decompression bombs), the
degenerate shapes the detector cannot take (``min_side_px``, ``max_aspect_ratio``) and the EXIF
orientation. The pixels are then decoded once, at reduced size when the target allows it (see
``resize``), converted to 8-bit RGB (``pixels``), resized, turned into the displayed frame and
encoded. Bytes are kept untouched when nothing would change: already in the stored format, no
resize, 8-bit grey or RGB, and no orientation other than the identity. The sha256 is of the bytes
as downloaded; width and height are the original image's, in its displayed frame.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import warnings
from dataclasses import dataclass, replace

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from grit_pipeline.fetch import pixels
from grit_pipeline.fetch.area import load_kernel
from grit_pipeline.fetch.config import FetchConfig
from grit_pipeline.fetch.formats import open_header
from grit_pipeline.fetch.resize import STORED_DCT_GAP, ResizePolicy, dct_scale, resample
from grit_pipeline.fetch.results import FetchedImage, FetchError, FetchFailure
from grit_pipeline.fetch.scratch import ScratchPool

# Stored bytes in these JPEG modes are what every reader decodes the same way; CMYK is not.
_KEEPABLE_MODES = frozenset({"L", "RGB"})
# The reduction bits alone (the "grayscale" names carry no colour bit), to combine with IMREAD_COLOR_RGB.
_CV2_REDUCED = {
    1: 0,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}

# The decoded picture of each resize in flight, kept for the next unless larger than 64 MB (6 Mpx).
_DECODED = ScratchPool(np.uint8, kept_bytes=64 << 20)

# For readers of bytes already checked by the fetch stage: no shape limits (Pillow's bomb check stays).
_NO_LIMITS = FetchConfig(max_pixels=2**62, min_side_px=1, max_aspect_ratio=float("inf"))


def img2dataset_module(name: str):
    """``img2dataset.<name>``, imported on first use (img2dataset is heavy). It imports albumentations,
    which checks for updates over the network on import unless NO_ALBUMENTATIONS_UPDATE is set."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return importlib.import_module(f"img2dataset.{name}")


@dataclass(frozen=True)
class Header:
    """What the image header says, before any pixel is decoded."""

    format: str | None  # Pillow's name, e.g. "JPEG"
    mode: str
    stored_size: tuple[int, int]  # as the pixels are stored
    orientation: int  # EXIF orientation, 1 (identity) to 8

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in the displayed frame."""
        return pixels.displayed_size(self.stored_size, self.orientation)


def make_resizer(config: FetchConfig) -> ResizePolicy:
    """The resize and encode policy for ``config`` (img2dataset's semantics, see ``resize``)."""
    # Pillow warns above its own pixel limit while reading a header; ``check_header`` applies ours
    # (``max_pixels``) instead. Set once here: ``warnings.catch_warnings`` per call is not thread-safe.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    # The stage decodes one image per core in its threads; OpenCV's own thread pool on top of
    # that only adds contention (img2dataset's Resizer sets the same).
    cv2.setNumThreads(1)
    load_kernel()
    return ResizePolicy.from_config(config)


def read_header(data: bytes, config: FetchConfig) -> Header:
    """The checked header; rejects non-images, bombs and degenerate shapes without decoding pixels."""
    try:
        with open_header(data, config.max_pixels) as image:  # the allow-list, WebP's size checked
            header = Header(image.format, image.mode, image.size, pixels.orientation(image))
    except Image.DecompressionBombError as err:
        raise FetchError("too_many_pixels", str(err)) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise FetchError("not_an_image", f"cannot identify an image: {err}") from err
    width, height = header.size
    if width * height > config.max_pixels:
        raise FetchError(
            "too_many_pixels", f"{width}x{height} = {width * height} pixels > max {config.max_pixels}"
        )
    check_shape(width, height, config)
    return header


def check_shape(width: int, height: int, config: FetchConfig) -> None:
    """Refuse shapes no detector input can be made of (the detector's processor would compute a
    side of 0 px for a 4000x1 image and fail the whole batch)."""
    if min(width, height) < config.min_side_px:
        raise FetchError(
            "degenerate_image",
            f"{width}x{height}: shortest side below the minimum of {config.min_side_px} px",
        )
    if max(width, height) / min(width, height) > config.max_aspect_ratio:
        raise FetchError(
            "degenerate_image",
            f"{width}x{height}: aspect ratio {max(width, height) / min(width, height):.1f} "
            f"above the maximum of {config.max_aspect_ratio}",
        )


def check_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height (displayed frame) from the header, without decoding pixels; rejects
    non-images and bombs (no shape check: see ``read_header``)."""
    return read_header(data, replace(_NO_LIMITS, max_pixels=max_pixels)).size


def load_rgb(data: bytes, header: Header, target: tuple[int, int] | None) -> np.ndarray:
    """Decode once: an ``(h, w, 3)`` RGB array in the displayed frame, at ``target`` if given.

    When resized, the decoded picture is only read by the resampler, so it is decoded into a buffer
    reused across images (``scratch``); what is returned never shares memory with that buffer."""
    if not target:
        return pixels.to_displayed_frame(decode_rgb(data, header), header.orientation)
    stored_target = pixels.displayed_size(target, header.orientation)  # an involution
    scale = dct_scale(header.stored_size, stored_target, STORED_DCT_GAP) if header.format == "JPEG" else 1
    width, height = header.stored_size
    decoded_width, decoded_height = decoded_size(header.stored_size, scale)
    with _DECODED.take(decoded_width * decoded_height * 3) as buffer:
        rgb = decode_rgb(data, header, scale, buffer)
        rgb = resample(rgb, stored_target, (width / scale, height / scale))  # before turning: fewer pixels
        if np.may_share_memory(rgb, buffer):  # resample had nothing to do
            rgb = rgb.copy()
    return pixels.to_displayed_frame(rgb, header.orientation)


def decoded_size(stored_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) of a JPEG decoded at 1/``scale`` (libjpeg rounds up: a partial block counts)."""
    return -(-stored_size[0] // scale), -(-stored_size[1] // scale)


def decode_rgb(data: bytes, header: Header, scale: int = 1, buffer: np.ndarray | None = None) -> np.ndarray:
    """The stored frame's pixels as 8-bit RGB; a JPEG at 1/``scale`` of its size (DCT scaling).

    A complete grey or RGB JPEG is decoded by libjpeg-turbo through simplejpeg (the GIL released),
    into ``buffer`` when one is given (then the array returned is a view of it), OpenCV taking what
    simplejpeg's TurboJPEG API refuses; the same pixels OpenCV's ``imdecode`` gives. The rest goes
    through Pillow."""
    if header.format == "JPEG" and header.mode in _KEEPABLE_MODES and _ends_complete(data):
        width, height = decoded_size(header.stored_size, scale)
        sizes = {"min_width": width, "min_height": height} if scale > 1 else {}
        try:  # orientation is ours: libjpeg-turbo never reads EXIF
            return simplejpeg.decode_jpeg(data, "RGB", min_factor=scale, buffer=buffer, strict=False, **sizes)
        except ValueError:
            pass
        flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION | _CV2_REDUCED[scale]
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if rgb is None:
            raise FetchError("not_an_image", "cannot decode the JPEG data")
        return rgb
    try:  # everything else, and JPEGs that may be truncated (OpenCV would fill them in grey)
        with open_header(data, _NO_LIMITS.max_pixels) as image:  # its header checked by read_header
            if scale > 1:
                width, height = header.stored_size
                image.draft("RGB", (width // scale, height // scale))
            image.load()
            return pixels.rgb8_array(image)
    except pixels.UnsupportedModeError as err:
        raise FetchError("not_an_image", str(err)) from err
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt pixel data
        raise FetchError("not_an_image", f"cannot decode the image: {err}") from err


def _ends_complete(data: bytes) -> bool:
    """True when the JPEG ends with its end-of-image marker (some writers pad after it)."""
    return data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9")


def check_pixels(data: bytes) -> None:
    """Decode all of the image's data at the smallest scale, so truncated or corrupt files fail."""
    try:
        with open_header(data, _NO_LIMITS.max_pixels) as image:  # its header checked by read_header
            image.draft(None, (1, 1))  # a JPEG is then decoded at 1/8 scale: entropy data all read
            image.load()
    except (OSError, ValueError, SyntaxError) as err:
        raise FetchError("not_an_image", f"cannot decode the image: {err}") from err


def decode_image(data: bytes, config: FetchConfig, resizer: ResizePolicy, original_size=None) -> FetchedImage:
    """Check, decode and resize downloaded bytes; ``original_size`` (stored frame) overrides the
    decoded size (img2dataset outputs hold resized bytes but record the original size)."""
    header = read_header(data, config)
    width, height = header.size
    target = resizer.target_size(width, height)
    if target is None and resizer.stores_format(header.format) and keeps_bytes(header):
        check_pixels(data)
        image, (image_width, image_height) = data, (width, height)
    else:
        rgb = load_rgb(data, header, target)
        try:
            image, (image_height, image_width) = resizer.encode(rgb), rgb.shape[:2]
        except (ValueError, cv2.error) as err:  # e.g. WebP's 16383 px limit
            raise FetchError("resize_failed", f"cannot encode the image: {err}") from err
    if original_size and all(original_size):
        width, height = pixels.displayed_size(original_size, header.orientation)
    sha256 = hashlib.sha256(data).hexdigest()
    return FetchedImage(image, width, height, image_width, image_height, sha256, source=data)


def keeps_bytes(header: Header) -> bool:
    """True when the bytes as downloaded can be stored: a JPEG (never more than 8 bits a sample,
    unlike a PNG whose mode may say RGB for 16-bit samples) in grey or RGB, identity orientation."""
    return header.format == "JPEG" and header.mode in _KEEPABLE_MODES and header.orientation == 1


def open_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Encoded bytes -> an 8-bit RGB image in its displayed frame (EXIF orientation applied, every
    pixel mode converted as ``pixels.to_rgb8`` says).

    With ``min_side``, a JPEG is decoded at the smallest DCT scale whose shortest side is still at
    least ``min_side`` (libjpeg's reduced-size decoding), which is much faster for large photos.
    Raises FetchError for bytes that are not a decodable image.
    """
    header = read_header(data, _NO_LIMITS)
    scale = dct_scale(header.stored_size, (min_side, min_side)) if min_side and header.format == "JPEG" else 1
    rgb = decode_rgb(data, header, scale)
    return Image.fromarray(pixels.to_displayed_frame(rgb, header.orientation))


def decode_one(
    data: bytes, config: FetchConfig, resizer: ResizePolicy, original_size=None
) -> FetchedImage | FetchFailure:
    """``decode_image`` with its failure as a value (what ``Fetcher``'s decode threads hand on)."""
    try:
        return decode_image(data, config, resizer, original_size)
    except FetchError as err:
        return err.failure
