"""Trainer and evaluation defects of issue 9 (items 6-8), each pinned on a case where it matters."""

from __future__ import annotations

import random

from grit_pipeline.model.examples import TextConfig, form_text
from grit_pipeline.model.images import centre_window


def test_containment_is_applied_after_the_crop():
    """Threshold, crop, then containment (the original order): a container cropped away frees its parts."""
    caption = "a red circle to the left of a blue square"
    row = {
        "caption": caption,
        "ref_exps": [
            [0, 41, 0.0, 0.0, 0.2, 0.2, 0.9],  # the container: outside the centre crop of a wide image
            [28, 41, 0.4, 0.1, 0.6, 0.9, 0.9],  # contained in it, inside the crop
        ],
    }
    grounded = form_text(row, centre_window(200, 100), TextConfig(p_grounded=1.0), random.Random(0))
    # (0.4, 0.1, 0.6, 0.9) in the crop x in [0.25, 0.75] is (0.3, 0.1, 0.7, 0.9): cells 9+3*32, 22+28*32
    assert grounded == (
        "<grounding>a red circle to the left of <phrase>a blue square</phrase>"
        "<object><patch_index_0105><patch_index_0918></object>"
    )
    # Control: with the container visible, the contained expression is still dropped.
    row["ref_exps"][0] = [0, 41, 0.3, 0.1, 0.7, 0.9, 0.9]
    assert "<phrase>a red circle to the left of a blue square</phrase>" in form_text(
        row, centre_window(200, 100), TextConfig(p_grounded=1.0), random.Random(0)
    )
