"""Images for tests and benchmarks: small JPEGs, decompression bombs, PNGs of any bit depth, photo-like
and real-photo JPEGs at any size; and PSNR, to compare what a resize stored with what it should.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

import grit_pipeline

# The bundled example's photos (public-domain and CC0): the package data `grit build --example` reads.
PHOTOS = Path(grit_pipeline.__file__).parent / "example_input" / "photos"


def jpeg_bytes(width: int = 64, height: int = 48, color=(200, 30, 30), quality: int = 90) -> bytes:
    """A JPEG of a coloured rectangle on grey, so the image has some content."""
    image = Image.new("RGB", (width, height), (128, 128, 128))
    image.paste(color, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid grey PNG of ``width x height`` zeros: about 100 kB that would decode to 100 MB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one byte per pixel
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_bytes(samples, color_type: int, bit_depth: int = 8) -> bytes:
    """A PNG written from raw samples, any bit depth Pillow cannot write (16-bit RGB and RGBA).

    ``samples``: a numpy array of shape (h, w) or (h, w, channels), uint8 or uint16; ``color_type``
    as in the PNG spec (0 grey, 2 RGB, 4 grey + alpha, 6 RGBA).
    """
    import numpy as np

    height, width = samples.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = np.ascontiguousarray(samples.astype(dtype)).reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def photo_jpeg(width: int = 640, height: int = 480, seed: int = 0, quality: int = 85) -> bytes:
    """A JPEG with photo-like content (smooth gradients, shapes, thin lines, sensor-like noise), so
    that resampling filters differ measurably; 1.2 to 1.8 bits per pixel, as web photos at quality
    85; deterministic for a given seed."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.full((height, width, 3), 128, np.float32)
    for channel in range(3):
        for _ in range(6):
            fx, fy = rng.uniform(0.002, 0.08, 2)
            pixels[..., channel] += rng.uniform(10, 40) * np.sin(fx * x + fy * y + rng.uniform(0, 6.3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(10, width // 3)), y0 + int(rng.integers(10, height // 3))]
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    for _ in range(40):
        ends = [tuple(int(v) for v in rng.integers(0, min(width, height), 2)) for _ in range(2)]
        draw.line(ends, fill=tuple(int(v) for v in rng.integers(0, 255, 3)), width=int(rng.integers(1, 4)))
    noisy = np.asarray(image).astype(np.float32) + rng.normal(0, 2.5, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def photo_mosaic_jpeg(width: int, height: int, seed: int = 0, quality: int = 92) -> bytes:
    """Real photos as web photos of ``width x height``: the bundled example photos (public-domain
    and CC0, 451 x 300 to 640 x 427) tiled at their native resolution, row by row starting from
    photo ``seed``, encoded by Pillow at ``quality``. Unlike ``photo_jpeg``'s synthetic content,
    real texture and edges at every scale, as the stored-image quality measurements need."""
    import numpy as np

    photos = [np.asarray(Image.open(path).convert("RGB")) for path in sorted(PHOTOS.glob("*.jpg"))]
    canvas = np.zeros((height, width, 3), np.uint8)
    top, index = 0, seed
    while top < height:
        left, row_height = 0, 0
        while left < width:
            photo = photos[index % len(photos)]
            index += 1
            piece = photo[: height - top, : width - left]
            canvas[top : top + piece.shape[0], left : left + piece.shape[1]] = piece
            left, row_height = left + photo.shape[1], max(row_height, photo.shape[0])
        top += row_height
    out = io.BytesIO()
    Image.fromarray(canvas).save(out, "JPEG", quality=quality)
    return out.getvalue()


def psnr_db(a, b) -> float:
    """Peak signal-to-noise ratio of two same-shape 8-bit images (arrays), in dB (about 120 when equal)."""
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))
