"""How full grounding batches get on a realistic stream of web image sizes, before and after.

The stream (deterministic, ``--seed``): 85 % of images have one of the common ratios 4:3, 3:4,
1:1, 3:2, 2:3, 16:9 at a camera or screen size (640x480 ... 6000x4000, 1280x720 ... 3840x2160),
15 % have a ratio drawn log-uniformly between 1:2 and 2:1 and a shortest side drawn log-uniformly
between 300 and 2,000 px. Each image's processed shape goes into a ``ShapeBuckets`` (the build's
class) and the batches that come out are counted: mean batch / configured batch size is the fill.

- before: the mapping and policy of the previous release, replicated here (the processor's size
  with each side rounded to a multiple of 32; 4 batches' worth of rows held; the fullest bucket
  leaving first when that is exceeded);
- after:  the build's own ``ImageSpec().target_shape`` (canonical shapes, aspect within 3.05 %)
  and ``ShapeBuckets`` with ``ground.HELD_BATCHES`` batches held, the oldest row's bucket first.

``--bundle-rows N`` also flushes every bucket every N rows, as the end of a Beam bundle does.
``--box-shift`` measures, with the tiny Grounding DINO architecture (random weights, built in
code), how far the detector's boxes move when an image is resized to its canonical shape instead
of the processor's exact size: the normalised corner coordinates of every query box, compared.
That proves the mechanics (boxes come back in the image's frame, the stretch moves them by about
this much in this network) and nothing about a trained detector's accuracy, for which run
``grit audit`` on Flickr30k Entities with the real weights at ``max_stretch`` 0 and 0.03.

    python benchmarks/batch_fill.py                      # RESULT batch_fill (batch size 8)
    python benchmarks/batch_fill.py --batch-sizes 8 16 32 --bundle-rows 5000
    python benchmarks/batch_fill.py --box-shift --images 24
    python benchmarks/batch_fill.py --build 240 --out /tmp/fill-build   # then: grit inspect /tmp/fill-build

``--build N`` runs a real ``grit build`` (tiny detector, Beam's local runner) on the stream's first
N images, served at a 240 px shortest side (aspect ratios kept) by a loopback HTTP server, and
prints the batch figures its manifest records.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from grit_pipeline.beam_jobs.ground import HELD_BATCHES
from grit_pipeline.grounding.batching import ShapeBuckets
from grit_pipeline.grounding.preprocess import ImageSpec
from grit_pipeline.grounding.shapes import processor_shapes

COMMON_RATIOS = ((4, 3), (3, 4), (1, 1), (3, 2), (2, 3), (16, 9))
LANDSCAPE_SIZES = {
    (4, 3): ((640, 480), (800, 600), (1024, 768), (1600, 1200), (2048, 1536), (4000, 3000)),
    (1, 1): ((500, 500), (640, 640), (1024, 1024), (1080, 1080)),
    (3, 2): ((600, 400), (900, 600), (1200, 800), (1500, 1000), (3000, 2000), (6000, 4000)),
    (16, 9): ((640, 360), (1280, 720), (1366, 768), (1920, 1080), (2560, 1440), (3840, 2160)),
}
ARBITRARY_SHARE = 0.15


def stream(rows: int, seed: int) -> list[tuple[int, int]]:
    """(width, height) of each image of the stream."""
    rng = np.random.default_rng(seed)
    sizes = []
    for _ in range(rows):
        if rng.random() < ARBITRARY_SHARE:
            ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            short = math.exp(rng.uniform(math.log(300), math.log(2000)))
            sizes.append(
                (round(short * ratio), round(short)) if ratio >= 1 else (round(short), round(short / ratio))
            )
            continue
        width, height = COMMON_RATIOS[rng.integers(len(COMMON_RATIOS))]
        options = LANDSCAPE_SIZES[(max(width, height), min(width, height))]
        w, h = options[rng.integers(len(options))]
        sizes.append((w, h) if width >= height else (h, w))
    return sizes


def legacy_shape(width: int, height: int) -> tuple[int, int]:
    """The previous release's shape: the processor's size, each side rounded to a multiple of 32."""
    out_h, out_w = processor_shapes([width], [height], 800, 1333)[0]
    return max(32, round(out_h / 32) * 32), max(32, round(out_w / 32) * 32)


class FullestFirst(ShapeBuckets):
    """The previous release's eviction: the fullest bucket leaves when too much is held."""

    def _evicted(self):
        return max(self._buckets, key=lambda key: len(self._buckets[key]))


def fill(shapes, buckets: ShapeBuckets, batch_size: int, bundle_rows: int | None) -> tuple[float, int]:
    """(mean batch / batch size, batches) of the stream's shapes through ``buckets``."""
    sizes = []
    for index, shape in enumerate(shapes):
        sizes += [len(batch) for batch in buckets.add(shape, index)]
        if bundle_rows and (index + 1) % bundle_rows == 0:
            sizes += [len(batch) for batch in buckets.flush()]
    sizes += [len(batch) for batch in buckets.flush()]
    return len(shapes) / len(sizes) / batch_size, len(sizes)


def fill_report(args) -> None:
    images = stream(args.rows, args.seed)
    spec = ImageSpec()
    before_shapes = [legacy_shape(w, h) for w, h in images]
    after_shapes = [spec.target_shape(w, h) for w, h in images]
    print(
        f"stream: {args.rows} images, {100 * ARBITRARY_SHARE:.0f} % arbitrary ratios (1:2 .. 2:1), seed {args.seed}"
    )
    print(f"distinct shapes: before {len(set(before_shapes))}, after {len(set(after_shapes))}")
    for batch_size in args.batch_sizes:
        before, _ = fill(
            before_shapes, FullestFirst(batch_size, 4 * batch_size), batch_size, args.bundle_rows
        )
        held = HELD_BATCHES * batch_size
        after, batches = fill(after_shapes, ShapeBuckets(batch_size, held), batch_size, args.bundle_rows)
        print(
            f"batch size {batch_size:>3}: mean batch before {before * batch_size:6.2f} ({100 * before:5.1f} %), "
            f"after {after * batch_size:6.2f} ({100 * after:5.1f} %) in {batches} batches, {held} rows held"
        )
        if batch_size == args.batch_sizes[0]:
            print(f"RESULT batch_fill_before {before:.4f}")
            print(f"RESULT batch_fill {after:.4f}")


def matched_shift(reference, other, box_iou) -> tuple[np.ndarray, np.ndarray]:
    """Per reference box: IoU with its best-matching ``other`` box, and the largest corner move to it.

    Grounding DINO picks its queries from the encoder's top proposals, so query i of one run is not
    query i of another: each box is compared with the box of the other run that overlaps it most.
    """
    import torch

    both = box_iou(torch.cat([reference, other]))[: len(reference), len(reference) :]
    best = both.max(dim=1)
    moved = (reference - other[best.indices]).abs().max(dim=1).values
    return best.values.numpy(), moved.numpy()


def box_shift_report(args) -> None:
    import torch
    from PIL import Image, ImageDraw

    from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig, GroundingRequest, load_detector
    from grit_pipeline.grounding.postprocess import box_iou, center_to_corners
    from grit_pipeline.grounding.preprocess import PreparedImage, resize_pixels
    from grit_pipeline.grounding.shapes import aspect_change

    torch.set_num_threads(args.threads)
    detector = load_detector(DetectorConfig(model=TINY_DETECTOR, max_stretch=0.03, device="cpu"))
    spec = detector.image_spec
    rng = np.random.default_rng(args.seed)
    figures = {"stretch": ([], []), "rescale": ([], [])}
    changes = []
    for _ in range(args.images):
        ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        width, height = (round(240 * ratio), 240) if ratio >= 1 else (240, round(240 / ratio))
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):  # a few solid rectangles: structure for the features to respond to
            x0, y0 = rng.uniform(0, width * 0.7), rng.uniform(0, height * 0.7)
            x1, y1 = x0 + rng.uniform(20, width * 0.3), y0 + rng.uniform(20, height * 0.3)
            draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        exact = tuple(
            int(v) for v in processor_shapes([width], [height], spec.shortest_edge, spec.longest_edge)[0]
        )
        canonical = spec.target_shape(width, height)
        change = float(aspect_change([width], [height], np.array([canonical]))[0])
        changes.append(change)
        # The reference: the same image scaled by the same amount in both directions (no stretch),
        # the kind of change multi-scale training teaches a detector to take.
        rescaled = (round(exact[0] * (1 + change)), round(exact[1] * (1 + change)))
        pixels = np.array(image)
        boxes = {}
        for name, shape in (("exact", exact), ("stretch", canonical), ("rescale", rescaled)):
            prepared = PreparedImage(resize_pixels(pixels, *shape))
            inputs, _, _ = detector.encode(
                [GroundingRequest(prepared, "a dog on the grass near a red car", ())]
            )
            with torch.inference_mode():
                boxes[name] = center_to_corners(detector.model(**inputs).pred_boxes[0].float())
        for name in figures:
            iou, moved = matched_shift(boxes["exact"], boxes[name], box_iou)
            figures[name][0].append(iou)
            figures[name][1].append(moved)
    print(
        f"box movement against the exact size, {args.images} images with arbitrary ratios (aspect "
        f"change mean {100 * np.mean(changes):.2f} %, max {100 * max(changes):.2f} %), tiny random "
        f"Grounding DINO at its {spec.shortest_edge}/{spec.longest_edge} px sizes, each box against "
        "its best-matching box:"
    )
    for name, label in (("stretch", "canonical shape (stretched)"), ("rescale", "same change, both sides")):
        iou, moved = np.concatenate(figures[name][0]), np.concatenate(figures[name][1])
        print(
            f"  {label:<28} IoU mean {iou.mean():.4f} (p5 {np.quantile(iou, 0.05):.4f}); largest corner "
            f"move mean {moved.mean():.4f}, p95 {np.quantile(moved, 0.95):.4f} of the image side"
        )
        print(f"RESULT box_iou_{name} {iou.mean():.4f}")
        print(f"RESULT box_move_{name} {moved.mean():.4f}")


def build_report(args) -> None:
    import json
    import subprocess
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

    captions = ["a dog on the grass near a red car", "two people riding bikes on a street"]
    out = Path(args.out or tempfile.mkdtemp(prefix="batch-fill-"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = stream(args.build, args.seed)
    with LoopbackServer() as server:
        urls = []
        for index, (width, height) in enumerate(sizes):
            scale = 240 / min(width, height)
            body = jpeg_bytes(round(width * scale), round(height * scale), (index * 7 % 255, 90, 200))
            urls.append(server.add(f"/img/{index}.jpg", Route(body)))
        table = pa.table({"url": urls, "caption": [captions[i % 2] for i in range(len(urls))]})
        pq.write_table(table, out / "input.parquet")
        argv = [sys.executable, "-m", "grit_pipeline.beam_jobs.job", "--input", str(out / "input.parquet")]
        argv += ["--output", str(out / "build"), "--detector", "tiny-random", "--box-threshold", "0.5"]
        argv += ["--allow-network", "127.0.0.1/32", "--max-host-connections", "0", "--max-host-rate", "0"]
        argv += ["--progress-interval", "0", "--mode", "overwrite"]
        argv += ["--detector-batch-size", str(args.batch_sizes[0])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "build" / "manifest.json").read_text())
    figures = manifest["timings"]["ground_batches"]
    print(f"grit build of {args.build} rows -> {out / 'build'}: counts {manifest['counts']}")
    print(f"  manifest timings.ground_batches: {json.dumps(figures)}")
    print(f"RESULT build_batch_fill {figures['batch_fill']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--bundle-rows", type=int, default=None, help="flush every bucket every N rows")
    parser.add_argument("--box-shift", action="store_true", help="also measure box movement (tiny model)")
    parser.add_argument("--images", type=int, default=24, help="images for --box-shift")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--build", type=int, default=None, help="also run a loopback grit build of N rows")
    parser.add_argument("--out", default=None, help="folder for --build (default: a new temporary one)")
    args = parser.parse_args(argv)
    fill_report(args)
    if args.box_shift:
        box_shift_report(args)
    if args.build:
        build_report(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
