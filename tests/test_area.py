"""The exact area-average kernel (``fetch/area.py``) against OpenCV's ``INTER_AREA`` and a float
reference, at integer and fractional factors, over whole and fractional extents."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from grit_pipeline.fetch.area import area_reduce, area_taps

SIZES = [
    ((640, 480), (341, 256)),  # 1.875
    ((1600, 1200), (341, 256)),  # 4.69
    ((500, 375), (341, 256)),  # 1.47
    ((257, 300), (256, 299)),  # barely smaller
    ((1000, 10), (7, 3)),  # very different factors per side
    ((33, 33), (1, 1)),  # everything into one pixel
]


def photo_like(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 1.5).reshape(height, width, channels)


@pytest.mark.parametrize("source, size", SIZES)
def test_the_pixels_inter_area_makes_within_one_level(source, size):
    image = photo_like(*source)
    ours = area_reduce(image, size)
    theirs = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    assert ours.shape == theirs.shape == (size[1], size[0], 3)
    difference = np.abs(ours.astype(int) - theirs)
    assert difference.max() <= 1
    assert np.mean(difference) < 0.02  # rounding, not a different filter


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_any_channel_count_and_a_plain_grey_array(channels):
    image = photo_like(97, 61, channels)
    reference = cv2.resize(image.astype(np.float32), (40, 25), interpolation=cv2.INTER_AREA)
    ours = area_reduce(image, (40, 25))
    assert np.abs(ours.astype(float) - reference.reshape(ours.shape)).max() <= 0.5 + 1e-3
    if channels == 1:
        grey = area_reduce(image[:, :, 0], (40, 25))
        assert grey.shape == (25, 40) and np.array_equal(grey, ours[:, :, 0])


def test_a_fractional_extent_weights_the_last_pixel_by_what_it_covers():
    # 1001 px at 1/8 scale: 126 px, the last covering 0.125 of a pixel.
    image = photo_like(126, 90)
    extent = (125.125, 90.0)
    ours = area_reduce(image, (40, 30), extent)
    # Reference: every pixel repeated 8 times, cut to the 1001 px the picture covers, then averaged.
    repeated = np.repeat(image, 8, axis=1)[:, :1001].astype(np.float32)
    reference = cv2.resize(repeated, (40, 30), interpolation=cv2.INTER_AREA)
    assert np.abs(ours.astype(float) - reference).max() <= 0.5 + 1e-3


def test_an_extent_leaves_what_lies_outside_it_out():
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, 6:] = 255  # outside the 6 px the picture covers
    assert area_reduce(image, (3, 2), (6.0, 4.0)).max() == 0


def test_the_weights_of_every_output_sum_to_one():
    for n_src, n_out, extent in [(1001, 256, 1001.0), (126, 40, 125.125), (7, 7, 7.0), (5, 2, 4.5)]:
        start, weights = area_taps(n_src, n_out, extent)
        assert np.allclose(weights.sum(axis=1), 1, atol=1e-5)
        assert (start >= 0).all() and (start < n_src).all()
        assert not weights.flags.writeable  # cached tables are shared


@pytest.mark.parametrize("size, extent", [((9, 4), None), ((4, 4), (3.5, 4.0)), ((0, 4), None)])
def test_growing_a_side_is_refused(size, extent):
    with pytest.raises(ValueError, match="not a reduction"):
        area_reduce(np.zeros((4, 8, 3), np.uint8), size, extent)


def test_threads_at_once_each_get_their_own_scratch():
    from concurrent.futures import ThreadPoolExecutor

    images = [photo_like(300 + 7 * i, 200 + 5 * i, seed=i) for i in range(16)]
    alone = [area_reduce(image, (97, 61)) for image in images]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda image: area_reduce(image, (97, 61)), images * 4))
    assert all(np.array_equal(a, b) for a, b in zip(alone * 4, together))


def test_both_passes_write_into_the_reused_scratch(monkeypatch):
    # OpenCV silently allocates a new array when its dst does not match; the scratch then saves nothing.
    import grit_pipeline.fetch.area as area
    from grit_pipeline.fetch.scratch import ScratchPool

    monkeypatch.setattr(area, "_SCRATCH", ScratchPool(np.uint16, kept_bytes=1 << 20))
    written = []
    transpose = area.cv2.transpose
    monkeypatch.setattr(
        area.cv2, "transpose", lambda src, dst=None: written.append(transpose(src, dst)) or written[-1]
    )
    image = photo_like(120, 90)
    reference = cv2.resize(image, (60, 45), interpolation=cv2.INTER_AREA)
    assert np.abs(area_reduce(image, (60, 45)).astype(int) - reference).max() <= 1
    kept = area._SCRATCH._free.get_nowait()  # the buffer that call used, kept for the next
    assert np.shares_memory(written[0], kept)  # what OpenCV wrote into, not a copy it made
