"""Which image formats are decoded at all, and their pixel count read before any decoder runs.

A web corpus needs the formats browsers show in ``<img>``: JPEG (and MPO, the multi-picture JPEG
cameras write, of which the first picture is the JPEG), PNG (APNG: its first frame), WebP, GIF
(first frame), BMP and TIFF (first page). Nothing else is decoded: Pillow knows some 40 formats,
and opening some of them runs code we do not want on a worker fed by the web: ICO and CUR decode
their largest embedded PNG or BMP inside ``Image.open`` (445 KB of ICO = 707 MB before our pixel
limit was read), EPS hands the file to Ghostscript, and the rest (PSD, PCX, SGI, ...) are parsers
nobody exercises with web bytes. Those are ``unsupported_format``; bytes that are no image at all
stay ``not_an_image``.

The format is read from the signature (the first bytes), never from a file name or a
Content-Type, and Pillow is then told to try that one plugin only. For every allowed format,
Pillow's ``open`` reads the header and no pixel data; WebP is the exception (its ``open`` builds
libwebp's animation decoder, which allocates the whole canvas), so its size is read here from
the RIFF header (VP8, VP8L or VP8X chunk) and checked first.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

from grit_pipeline.fetch.results import FetchError

UNSUPPORTED_FORMAT = "unsupported_format"
# Pillow's format names, as ``image.format`` reports them after ``open``.
DECODED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),  # Pillow's JPEG plugin returns an MPO image for multi-picture files
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


def sniff(data: bytes) -> str:
    """Pillow's plugin name for ``data`` from its signature; FetchError ``unsupported_format`` for an
    image format outside the list, ``not_an_image`` for anything else."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    other = _other_pillow_format(data[:16])
    if other is not None:
        raise FetchError(
            UNSUPPORTED_FORMAT,
            f"a {other} image: only {', '.join(DECODED_FORMATS)} are decoded (see fetch/formats.py)",
        )
    raise FetchError("not_an_image", f"cannot identify an image (starts with {data[:8]!r})")


def _other_pillow_format(prefix: bytes) -> str | None:
    """The name of another Pillow format whose signature test accepts ``prefix`` (no plugin's
    ``open`` runs: only its ``_accept`` on the first bytes)."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name in DECODED_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # a signature test that wants more bytes: not this format
            continue
    return None


def webp_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a WebP from its first chunk (VP8X canvas, VP8L or VP8 frame); not_an_image if unreadable."""
    kind, body = data[12:16], data[20:40]
    try:
        if kind == b"VP8X":
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif kind == b"VP8L":
            if body[0] != 0x2F:
                raise ValueError("no VP8L signature")
            bits = struct.unpack("<I", body[1:5])[0]
            width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif kind == b"VP8 ":
            if body[3:6] != b"\x9d\x01\x2a":
                raise ValueError("no VP8 start code")
            width = struct.unpack("<H", body[6:8])[0] & 0x3FFF
            height = struct.unpack("<H", body[8:10])[0] & 0x3FFF
        else:
            raise ValueError(f"first chunk {kind!r}")
    except (ValueError, IndexError, struct.error) as err:
        raise FetchError("not_an_image", f"cannot read the WebP header: {err}") from err
    return width, height


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FetchError("too_many_pixels", f"{width}x{height} = {width * height} pixels > max {max_pixels}")


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """``data`` opened by the one Pillow plugin its signature names, header read, no pixel decoded.

    Raises FetchError: ``unsupported_format``, ``not_an_image``, or ``too_many_pixels`` (WebP's
    checked before Pillow sees it; the others are checked by the caller from ``image.size``, or by
    Pillow's own bomb limit inside ``open``).
    """
    name = sniff(data)
    if name == "WEBP":
        check_pixel_count(*webp_size(data), max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=[name])
    except Image.DecompressionBombError as err:
        raise FetchError("too_many_pixels", str(err)) from err
    except Exception as err:  # Pillow raises many types for a broken header
        raise FetchError("not_an_image", f"cannot identify an image: {err}") from err
    if image.format not in DECODED_FORMATS:  # never expected: the plugin asked for is one of ours
        image.close()
        raise FetchError(UNSUPPORTED_FORMAT, f"a {image.format} image: not decoded")
    return image
