"""Decoding in the fetch stage: every pixel mode to 8-bit RGB, EXIF orientation, degenerate shapes,
img2dataset's resize semantics, and ``open_rgb`` (what the detector sees)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from grit_pipeline.fetch import (
    FetchConfig,
    FetchedImage,
    Fetcher,
    FetchError,
    decode_image,
    make_resizer,
    open_rgb,
)
from grit_pipeline.fetch.decode import img2dataset_module
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes, png_bytes

LOSSLESS = {"encode_format": "png", "encode_quality": 1, "resize_mode": "no"}


def decoded(data: bytes, **options) -> FetchedImage:
    config = FetchConfig(**options)
    return decode_image(data, config, make_resizer(config))


def stored_pixels(result: FetchedImage) -> np.ndarray:
    with Image.open(io.BytesIO(result.image)) as image:
        assert image.mode in ("RGB", "L"), image.mode
        return np.asarray(image.convert("RGB")).astype(int)


def encoded(image: Image.Image, image_format: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **params)
    return out.getvalue()


def on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Reference alpha compositing on white (img2dataset's formula), in floats."""
    a = alpha[..., None] / 255.0
    return np.rint(rgb * a + 255 * (1 - a))


# ---- every mode to 8-bit RGB: sources and their reference conversions (computed here, in numpy)

RNG = np.random.default_rng(7)
# Smooth full-range 16-bit gradients (JPEG keeps them), with random low bytes (rounding matters).
_Y, _X = np.mgrid[0:24, 0:32]
WIDE16 = np.stack([_X * 65000 / 31, _Y * 65000 / 23, (_X + _Y) * 65000 / 54], -1).astype(np.uint16)
WIDE16 = WIDE16 + RNG.integers(0, 256, WIDE16.shape).astype(np.uint16)
GREY16 = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (24, 1))  # a full-range gradient
ALPHA8 = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
RGB8 = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
CMYK8 = np.stack([np.full((24, 32), v, np.uint8) for v in (30, 140, 200, 60)], axis=-1)


def _sixteen_bit_rgb():
    return png_bytes(WIDE16, color_type=2, bit_depth=16), np.rint(WIDE16 / 257.0)


def _sixteen_bit_grey():
    return png_bytes(GREY16, color_type=0, bit_depth=16), np.repeat(np.rint(GREY16 / 257.0)[..., None], 3, -1)


def _sixteen_bit_rgba():
    alpha16 = ALPHA8.astype(np.uint16) * 257
    data = png_bytes(np.dstack([WIDE16, alpha16]), color_type=6, bit_depth=16)
    return data, on_white(np.floor(WIDE16 / 256.0), ALPHA8)  # Pillow keeps the high byte of 16-bit RGBA


def _rgba():
    return encoded(Image.fromarray(np.dstack([RGB8, ALPHA8]), "RGBA"), "PNG"), on_white(RGB8, ALPHA8)


def _grey_alpha():
    grey = RGB8[..., 0]
    image = Image.fromarray(np.dstack([grey, ALPHA8]), "LA")
    return encoded(image, "PNG"), np.repeat(on_white(grey[..., None], ALPHA8), 3, -1)


def _palette_with_transparency():
    palette = np.array([[255, 0, 0], [0, 0, 255], [10, 200, 10]], np.uint8)
    indexes = (np.arange(32)[None, :] // 11 + np.zeros((24, 1), int)).astype(np.uint8)
    image = Image.fromarray(indexes, "P")
    image.putpalette(palette.flatten().tolist())
    reference = palette[indexes].astype(float)
    reference[indexes == 1] = 255  # index 1 is transparent: white
    return encoded(image, "PNG", transparency=1), reference


def _cmyk_reference() -> np.ndarray:
    c, m, y, k = (CMYK8[..., i].astype(float) for i in range(4))
    return np.rint(np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1) / 255)


def _cmyk_tiff():
    return encoded(Image.fromarray(CMYK8, "CMYK"), "TIFF"), _cmyk_reference()


def _one_bit():
    bits = (RGB8[..., 0] > 127).astype(np.uint8) * 255
    return encoded(Image.fromarray(bits).convert("1"), "PNG"), np.repeat(bits[..., None], 3, -1).astype(float)


def _float():
    values = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (24, 1))
    return encoded(Image.fromarray(values, "F"), "TIFF"), np.repeat(np.rint(values * 255)[..., None], 3, -1)


# (source bytes, reference RGB) makers; the tolerance is the rounding of a conversion (1 grey level)
EXACT_CASES = {
    "16-bit-rgb": _sixteen_bit_rgb,
    "16-bit-grey": _sixteen_bit_grey,
    "16-bit-rgba": _sixteen_bit_rgba,
    "rgba": _rgba,
    "grey-alpha": _grey_alpha,
    "palette-transparency": _palette_with_transparency,
    "cmyk-tiff": _cmyk_tiff,
    "1-bit": _one_bit,
    "float": _float,
}


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_every_mode_is_stored_as_its_reference_rgb(case):
    data, reference = EXACT_CASES[case]()
    result = decoded(data, **LOSSLESS)
    with Image.open(io.BytesIO(result.image)) as stored:
        assert stored.mode == "RGB" and stored.info.get("transparency") is None  # 8-bit RGB, nothing else
        assert b"IHDR" in result.image[:16] and result.image[24] == 8  # 8 bits per sample in the PNG
    pixels = stored_pixels(result)
    assert pixels.shape == reference.shape
    assert np.abs(pixels - reference).max() <= 1, case


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_open_rgb_gives_the_detector_the_same_reference_rgb(case):
    data, reference = EXACT_CASES[case]()
    image = open_rgb(data)
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - reference).max() <= 1, case


def test_adobe_cmyk_jpeg_is_stored_with_its_colours():
    # Pillow writes CMYK JPEGs as Photoshop does: inverted, with an Adobe APP14 marker.
    data = encoded(Image.fromarray(CMYK8, "CMYK"), "JPEG", quality=95)
    assert b"Adobe" in data
    for result in (decoded(data, **LOSSLESS), decoded(data)):  # lossless store, and the default JPEG
        assert np.abs(stored_pixels(result) - _cmyk_reference()).mean() < 3


@pytest.mark.parametrize("case", ["16-bit-rgb", "16-bit-grey", "16-bit-rgba"])
def test_sixteen_bit_png_in_the_default_jpeg_is_not_saturated(case):
    data, reference = EXACT_CASES[case]()
    pixels = stored_pixels(decoded(data))  # default: stored as JPEG quality 95
    assert np.abs(pixels - reference).mean() < 4  # was saturated: mean errors of 60 to 125


# ---- EXIF orientation: stored bytes, sizes and what the detector sees are in the displayed frame

# The transpose that undoes each orientation: the stored pixels are made so that applying the
# orientation gives DISPLAYED back.
UNDO = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
QUADRANT_COLOURS = [(220, 20, 20), (20, 220, 20), (20, 20, 220), (230, 230, 30)]  # TL, TR, BL, BR


def displayed(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    for i, colour in enumerate(QUADRANT_COLOURS):
        x, y = (i % 2) * half_w, (i // 2) * half_h
        image.paste(colour, (x, y, x + half_w, y + half_h))
    return image


def oriented_jpeg(image: Image.Image, orientation: int) -> bytes:
    stored = image if UNDO[orientation] is None else image.transpose(UNDO[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(stored, "JPEG", quality=95, exif=exif.tobytes())
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert shown.size == image.size  # the fixture itself is right: Pillow's reading agrees
    return data


def quadrant_colours(pixels: np.ndarray) -> list[tuple[int, ...]]:
    height, width = pixels.shape[:2]
    centres = [(width // 4, height // 4), (3 * width // 4, height // 4)]
    centres += [(width // 4, 3 * height // 4), (3 * width // 4, 3 * height // 4)]
    return [tuple(int(v) for v in pixels[y, x]) for x, y in centres]


def assert_quadrants(pixels: np.ndarray) -> None:
    for got, want in zip(quadrant_colours(pixels), QUADRANT_COLOURS):
        assert max(abs(g - w) for g, w in zip(got, want)) < 12, (got, want)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("size", "image_size"), [((96, 64), 512), ((800, 600), 128)], ids=["kept", "resized"]
)
def test_orientation_is_applied_before_anything_else(orientation, size, image_size):
    data = oriented_jpeg(displayed(*size), orientation)
    result = decoded(data, image_size=image_size)
    assert (result.width, result.height) == size  # original size, displayed frame
    with Image.open(io.BytesIO(result.image)) as stored:
        assert stored.getexif().get(0x0112, 1) == 1  # no orientation left for readers to apply
        assert stored.size == (result.image_width, result.image_height)
        assert (stored.width > stored.height) == (size[0] > size[1])
        assert_quadrants(np.asarray(stored.convert("RGB")))
    shown = open_rgb(result.source, min_side=64)  # the detector's view: boxes in the same frame
    assert (shown.width > shown.height) == (size[0] > size[1])
    assert_quadrants(np.asarray(shown))


# ---- degenerate shapes never reach the detector


@pytest.mark.parametrize(
    ("size", "accepted"),
    [((4000, 1), False), ((15, 100), False), ((16, 16), True), ((160, 16), True), ((170, 16), False)],
)
def test_degenerate_shapes_are_rejected_by_reason(size, accepted):
    data = encoded(Image.new("RGB", size, (90, 90, 90)), "PNG")
    if accepted:
        assert decoded(data).width == size[0]
    else:
        with pytest.raises(FetchError) as info:
            decoded(data)
        assert info.value.failure.reason == "degenerate_image"
        assert f"{size[0]}x{size[1]}" in info.value.failure.error


def test_a_93_byte_strip_png_is_a_reject_row_not_an_image():
    data = encoded(Image.new("L", (4000, 1)), "PNG", optimize=True)
    assert len(data) < 120
    with LoopbackServer() as server:
        url = server.add("/strip.png", Route(data, headers=(("Content-Type", "image/png"),)))
        fetcher = Fetcher(FetchConfig(allowed_networks=("127.0.0.1/32",)))
        try:
            [(_, result)] = fetcher.fetch_all([("k", url)])
        finally:
            fetcher.close()
    assert result.reason == "degenerate_image", result


# ---- broken files and img2dataset's resize semantics


@pytest.mark.parametrize("image_size", [512, 64], ids=["kept", "resized"])
def test_a_jpeg_cut_in_the_middle_of_its_scan_is_not_an_image(image_size):
    data = jpeg_bytes(256, 192)
    with pytest.raises(FetchError) as info:
        decoded(data[: len(data) * 2 // 3], image_size=image_size)
    assert info.value.failure.reason == "not_an_image"


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((640, 480), {"image_size": 256}),
        ((2000, 1500), {"image_size": 256}),
        ((4000, 3000), {"image_size": 256}),  # decoded at 1/4 scale
        ((1001, 333), {"image_size": 100}),
        ((333, 1001), {"image_size": 100, "resize_mode": "keep_ratio_largest"}),
        ((80, 60), {"image_size": 256, "resize_only_if_bigger": False}),  # up-scaled
        ((300, 200), {"image_size": 256, "resize_mode": "no"}),
    ],
)
def test_sizes_and_pixels_match_img2dataset_resizer(size, options):
    from grit_pipeline.testing import photo_jpeg

    data = photo_jpeg(*size)
    ours = decoded(data, **options)
    config = FetchConfig(**options)
    resizer = img2dataset_module("resizer").Resizer(
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        resize_only_if_bigger=config.resize_only_if_bigger,
        encode_quality=config.encode_quality,
        skip_reencode=True,
    )
    theirs, width, height, original_width, original_height, error = resizer(io.BytesIO(data))
    assert error is None
    assert (ours.image_width, ours.image_height, ours.width, ours.height) == (
        width,
        height,
        original_width,
        original_height,
    )
    reference = np.asarray(Image.open(io.BytesIO(theirs)).convert("RGB")).astype(float)
    mse = np.mean((stored_pixels(ours) - reference) ** 2)
    assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 33  # same picture, resampled differently


def test_img2dataset_original_size_is_turned_into_the_displayed_frame():
    # img2dataset records the size of the stored frame (OpenCV ignores EXIF with IMREAD_UNCHANGED).
    data = oriented_jpeg(displayed(96, 64), orientation=6)
    config = FetchConfig()
    result = decode_image(data, config, make_resizer(config), original_size=(640, 960))
    assert (result.width, result.height) == (960, 640)
    assert (result.image_width, result.image_height) == (96, 64)


# ---- the JPEG decoder (simplejpeg) against OpenCV's


def _noisy_jpeg(width: int, height: int, mode: str = "RGB", subsampling: int = 2, seed: int = 0) -> bytes:
    rng = np.random.default_rng([width, height, seed])
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    return encoded(image, "JPEG", quality=90, subsampling=subsampling)


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
@pytest.mark.parametrize(("size", "mode"), [((1001, 667), "RGB"), ((375, 500), "RGB"), ((333, 250), "L")])
def test_jpegs_decode_to_the_pixels_opencv_gives_at_every_dct_scale(scale, size, mode):
    import cv2

    from grit_pipeline.fetch.decode import _CV2_REDUCED, decode_rgb, read_header

    data = _noisy_jpeg(*size, mode)
    header = read_header(data, FetchConfig())
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION | _CV2_REDUCED[scale]
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    pool = np.empty(theirs.size + 100, np.uint8)
    ours = decode_rgb(data, header, scale, pool)
    assert ours.shape == theirs.shape == (-(-size[1] // scale), -(-size[0] // scale), 3)
    assert np.array_equal(ours, theirs)
    assert np.shares_memory(ours, pool)  # decoded into the buffer given, not a fresh array


def test_a_jpeg_turbojpeg_refuses_is_decoded_by_opencv():
    # Chroma sampled finer than luma (2x2 against 1x1) is legal JPEG that TurboJPEG cannot name a
    # subsampling for; libjpeg's own API (OpenCV's) decodes it.
    import cv2
    import simplejpeg

    from grit_pipeline.fetch.decode import decode_rgb, read_header

    data = bytearray(_noisy_jpeg(64, 48, subsampling=0))
    sof = data.find(b"\xff\xc0")
    data[sof + 10 + 3 + 1] = data[sof + 10 + 6 + 1] = 0x22  # components 2 and 3: H=2, V=2
    data = bytes(data)
    with pytest.raises(ValueError, match="subsampling"):
        simplejpeg.decode_jpeg(data, "RGB", strict=False)
    ours = decode_rgb(data, read_header(data, FetchConfig()))
    theirs = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    assert np.array_equal(ours, theirs)


def test_what_load_rgb_returns_never_shares_the_reused_buffer():
    # A resize to the size the picture already has returns the decoded array itself: it must be a
    # copy, or the next image decoded into the buffer would overwrite a stored result.
    from grit_pipeline.fetch import decode

    first_data, second_data = (_noisy_jpeg(256, 192, seed=seed) for seed in (1, 2))
    header = decode.read_header(first_data, FetchConfig())
    first = decode.load_rgb(first_data, header, (256, 192))
    kept = first.copy()
    second = decode.load_rgb(second_data, header, (256, 192))  # decoded into the same buffer
    assert not np.array_equal(first, second)
    assert np.array_equal(first, kept)
    taken = decode._DECODED._free.get_nowait()
    assert not np.may_share_memory(first, taken) and not np.may_share_memory(second, taken)
    decode._DECODED._free.put(taken)
