"""img2dataset's own Resizer output in every resize mode, read back under each --img2dataset-resize-mode.

Prints counts of (images, JPEG quality, made mode, declared mode, outcome: ok / rejected / MISREAD).

    python benchmarks/img2dataset_modes.py
"""

import collections
import glob
import io
import itertools
import os
from pathlib import Path

os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
import numpy as np
from img2dataset.resizer import Resizer
from PIL import Image, ImageDraw

from grit_pipeline.inputs.frames import Restore, border_plan, center_crop_plan, plan_restore, same_aspect

ASPECTS = [(4, 3), (3, 4), (16, 9), (9, 16), (3, 2), (2, 3), (5, 4)]
MODES = ["border", "center_crop", "keep_ratio", "keep_ratio_largest", "no"]
DECLARED = ["auto", "border", "center_crop"]


def photos():
    photo_glob = Path(__file__).parents[1] / "grit_pipeline/example_input/photos/*.jpg"
    for path in sorted(glob.glob(str(photo_glob))):
        im = Image.open(path).convert("RGB")
        W, H = im.size
        for aw, ah in ASPECTS:
            s = min(W / aw, H / ah)
            w, h = int(aw * s), int(ah * s)
            left, t = (W - w) // 2, (H - h) // 2
            yield f"photo:{os.path.basename(path)}", im.crop((left, t, left + w, t + h))


def white_sky():
    """Photos whose top fifth is blown-out white, as an overexposed sky."""
    for _, im in photos():
        arr = np.asarray(im).copy()
        arr[: arr.shape[0] // 5] = 255
        yield "white-sky", Image.fromarray(arr)


def products(n=5):
    rng = np.random.default_rng(0)
    for k in range(n):
        for aw, ah in ASPECTS:
            s = rng.integers(60, 130)
            w, h = aw * s, ah * s
            im = Image.new("RGB", (w, h), (255, 255, 255))
            d = ImageDraw.Draw(im)
            frac = rng.uniform(0.3, 0.7)
            ow, oh = frac * min(w, h), frac * min(w, h) * rng.uniform(0.6, 1.4)
            cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
            col = tuple(int(c) for c in rng.integers(0, 200, 3))
            box = (cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2)
            (d.ellipse if k % 2 else d.rectangle)(box, fill=col)
            # a soft shadow / shading, as product shots have
            arr = np.asarray(im).astype(float)
            yy, xx = np.mgrid[0:h, 0:w]
            shade = 1 - 0.25 * ((xx - cx) / w + (yy - cy) / h)
            obj = (arr < 250).any(-1)
            arr[obj] = np.clip(arr[obj] * shade[obj, None], 0, 255)
            yield "product", Image.fromarray(arr.astype(np.uint8))


def encode_png(im):
    b = io.BytesIO()
    im.save(b, "PNG")
    b.seek(0)
    return b


def truth(mode, original, stored):
    if same_aspect(stored, original):
        return Restore()
    if mode == "border":
        return border_plan(original, stored[0])
    if mode == "center_crop":
        return center_crop_plan(original, stored[0])
    return Restore()


def main():
    table = collections.Counter()
    bad = []
    for size in (256, 200):
        for quality in (75, 95):
            resizers = {
                m: Resizer(
                    image_size=size, resize_mode=m, resize_only_if_bigger=False, encode_quality=quality
                )
                for m in MODES
            }
            for kind, im in itertools.chain(photos(), products(), white_sky()):
                kind0 = kind.split(":")[0]
                for mode in MODES:
                    data, _, _, ow, oh, err = resizers[mode](encode_png(im))
                    assert err is None, err
                    stored = Image.open(io.BytesIO(data))
                    stored.load()
                    expected = truth(mode, (ow, oh), stored.size)
                    for declared in DECLARED:
                        plan = plan_restore(stored, (ow, oh), declared)
                        if isinstance(plan, str):
                            outcome = "rejected"
                        elif plan == expected:
                            outcome = "ok"
                        else:
                            outcome = "MISREAD"
                            bad.append((size, quality, kind, im.size, mode, declared, plan, expected))
                        table[(kind0, quality, mode, declared, outcome)] += 1
    for key in sorted(table):
        print(key, table[key])
    for b in bad[:30]:
        print("MISREAD", b)


if __name__ == "__main__":
    main()
