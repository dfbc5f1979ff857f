"""The image -> processed shape mapping's stated bounds, checked over every image size from 16 to
8,000 px per side (63.8 million sizes, vectorised), and the exact mode against transformers."""

import numpy as np
import pytest
from transformers.image_transforms import get_size_with_aspect_ratio

from grit_pipeline.grounding.preprocess import ImageSpec
from grit_pipeline.grounding.shapes import (
    aspect_change,
    canonical_shapes,
    processor_shapes,
    target_shapes,
)

SIDES = np.arange(16, 8001)


def worst_over_every_size(max_stretch: float) -> tuple[float, int]:
    """(largest aspect change, longest processed side) over every width x height in SIDES."""
    worst, longest = 0.0, 0
    for start in range(0, len(SIDES), 1024):  # 1024 heights x 7985 widths at a time
        heights, widths = np.meshgrid(SIDES[start : start + 1024], SIDES, indexing="ij")
        heights, widths = heights.ravel(), widths.ravel()
        shapes = target_shapes(widths, heights, 800, 1333, max_stretch)
        worst = max(worst, float(aspect_change(widths, heights, shapes).max()))
        longest = max(longest, int(shapes.max()))
    return worst, longest


def test_canonical_shapes_change_the_aspect_by_at_most_3_05_percent_and_stay_within_1333():
    worst, longest = worst_over_every_size(0.03)
    assert 0.03 < worst <= 0.0305  # the stated bound, and it is tight
    assert longest == 1333


@pytest.mark.slow
def test_the_processors_own_sizes_change_the_aspect_by_up_to_16_7_percent():
    worst, longest = worst_over_every_size(0.0)
    assert 0.166 < worst <= 0.167  # 6094x16 -> 1333x3
    assert longest == 1376  # 1376x16 is kept as it is


def test_processor_shapes_are_transformers_sizes():
    rng = np.random.default_rng(0)
    widths, heights = rng.integers(16, 8001, 3000), rng.integers(16, 8001, 3000)
    widths[:4], heights[:4] = (640, 1920, 1376, 333), (480, 1080, 16, 250)
    got = processor_shapes(widths, heights, 800, 1333)
    want = [get_size_with_aspect_ratio((int(h), int(w)), 800, 1333) for w, h in zip(widths, heights)]
    assert [tuple(map(int, shape)) for shape in got] == want


def test_the_grid_holds_the_common_ratios_and_few_shapes_between_1_2_and_2_1():
    grid = canonical_shapes(800, 1333, 0.03)
    inner = np.abs(grid.log_ratios) <= np.log(2) + 1e-9
    assert inner.sum() == 25
    for width, height in [(4, 3), (3, 4), (1, 1), (3, 2), (2, 3), (16, 9), (9, 16), (2, 1), (1, 2)]:
        image = (width * 480, height * 480)
        [shape] = target_shapes([image[0]], [image[1]], 800, 1333, 0.03)
        want = get_size_with_aspect_ratio((image[1], image[0]), 800, 1333)
        assert np.abs(shape - np.array(want)).max() <= 1, (width, height)  # within a pixel


def test_a_stretch_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="max_stretch"):
        canonical_shapes(800, 1333, 1.5)


def test_image_spec_uses_the_same_mapping():
    spec = ImageSpec()
    for width, height in [(5614, 19), (1920, 1080), (431, 4000)]:
        [want] = target_shapes([width], [height], 800, 1333, 0.03)
        assert spec.target_shape(width, height) == tuple(int(v) for v in want)
