"""Fetch stage throughput and stored-image quality: our ``Fetcher`` vs. img2dataset, same URLs.

A loopback HTTP server (asyncio, in a process of its own: ``grit_pipeline.testing.served``) serves
N distinct-path JPEGs with photo-like content (``photo_jpeg``: gradients, shapes, thin lines, noise, about 1.5 bits per
pixel), in rotation over web-photo sizes (640 x 480, 1024 x 768 and 1600 x 1200 by default), so
both sides decode, resize to 256 on the shortest side and re-encode at quality 95. Both sides get
the same thread count and one process:

* ours:        ``Fetcher.fetch_all`` (guarded opener, retries, header checks, our decode path) in a
               fresh process, T download threads and one decode thread per core beside them; its
               time excludes start-up too;
* img2dataset: ``img2dataset --url_list ... --processes_count 1 --thread_count T`` with
               ``--resize_mode keep_ratio --image_size 256``; its time is the download phase it
               reports in its own ``*_stats.json`` (start-up excluded, which favours it).

The two alternate, the order flipping every round, and each side's images per second is taken
over all its rounds. Quality: on the served images, the PSNR of what each side stores against an
exact area average of the decoded original (float, unencoded), and of ours against img2dataset's
Resizer output. The last line is the throughput ratio of ours to img2dataset's (target >= 2.0).

    python benchmarks/fetch.py                          # 1,200 URLs, 16 threads, 3 rounds (~2.5 min)
    python benchmarks/fetch.py --sizes 500x375,375x500,800x533,1024x683   # common web sizes
    python benchmarks/fetch.py --content photos         # the bundled photos tiled into each size

At these sizes both sides decode the whole JPEG and store the same ``INTER_AREA`` pixels: ours
decodes at reduced DCT scale only from 3x the target (``resize.STORED_DCT_GAP``), 1536 px and up
for a 256 px side.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import multiprocessing
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from grit_pipeline.fetch import FetchConfig, FetchedImage, Fetcher, decode_image, make_resizer
from grit_pipeline.fetch.decode import img2dataset_module
from grit_pipeline.testing import psnr_db
from grit_pipeline.testing.served import DISTINCT_IMAGES, photo_bodies, served_photos


def _ours_in_child(urls, threads: int, image_size: int, results) -> None:
    # No per-host limits: every URL is on one loopback host, and img2dataset has none.
    config = FetchConfig(
        allow_private_addresses=True,
        thread_count=threads,
        image_size=image_size,
        retries=0,
        max_host_connections=0,
        max_host_requests_per_s=0,
    )
    fetcher = Fetcher(config)
    start = time.perf_counter()
    fetched = fetcher.fetch_all(enumerate(urls))
    seconds = time.perf_counter() - start
    fetcher.close()
    results.put((seconds, sum(isinstance(r, FetchedImage) for _, r in fetched)))


def run_ours(urls: list[str], threads: int, image_size: int) -> tuple[float, int]:
    """Our stage in a fresh process of its own, as img2dataset's command gets one; start-up excluded."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_ours_in_child, args=(urls, threads, image_size, results))
    child.start()
    seconds, ok = results.get(timeout=600)
    child.join()
    return seconds, ok


def run_img2dataset(url_file: str, threads: int, count: int, image_size: int) -> tuple[float, int, float]:
    with tempfile.TemporaryDirectory() as out:
        argv = ["img2dataset", "--url_list", url_file, "--input_format", "parquet", "--output_folder", out]
        argv += ["--processes_count", "1", "--thread_count", str(threads), "--image_size", str(image_size)]
        argv += ["--resize_mode", "keep_ratio", "--output_format", "parquet", "--enable_wandb", "False"]
        argv += ["--number_sample_per_shard", str(count), "--retries", "0", "--timeout", "10"]
        start = time.perf_counter()
        subprocess.run(
            argv, check=True, capture_output=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        )
        wall = time.perf_counter() - start
        stats = [json.loads(Path(p).read_text()) for p in glob.glob(f"{out}/*_stats.json")]
        seconds = sum(s["end_time"] - s["start_time"] for s in stats)
        return seconds, sum(s["successes"] for s in stats), wall


def quality(
    sizes: list[tuple[int, int]], image_size: int, content: str
) -> dict[tuple[int, int], dict[str, float]]:
    """Per served size, mean PSNR (dB): each side's stored pixels vs. an exact area average of the
    original (float, unencoded), and ours vs. img2dataset's Resizer."""
    config = FetchConfig(image_size=image_size)
    ours_policy = make_resizer(config)
    theirs = img2dataset_module("resizer").Resizer(image_size, "keep_ratio", True, skip_reencode=True)
    scores: dict[tuple[int, int], dict[str, list[float]]] = {}
    for size, data in photo_bodies(sizes, content):
        ours = decode_image(data, config, ours_policy)
        their_bytes = theirs(io.BytesIO(data))[0]
        ours_rgb, their_rgb = (
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in (ours.image, their_bytes)
        )
        original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float32)
        exact = cv2.resize(original, (ours.image_width, ours.image_height), interpolation=cv2.INTER_AREA)
        row = scores.setdefault(
            size, {"ours vs exact": [], "img2dataset vs exact": [], "ours vs img2dataset": []}
        )
        row["ours vs exact"].append(psnr_db(ours_rgb, exact))
        row["img2dataset vs exact"].append(psnr_db(their_rgb, exact))
        row["ours vs img2dataset"].append(psnr_db(ours_rgb, their_rgb))
    return {size: {name: float(np.mean(v)) for name, v in row.items()} for size, row in scores.items()}


def throughput(args, sizes: list[tuple[int, int]]) -> dict[str, float]:
    seconds_total = {"ours": 0.0, "img2dataset": 0.0}
    images_total = {"ours": 0, "img2dataset": 0}
    with served_photos(args.urls, sizes, args.content) as port, tempfile.TemporaryDirectory() as tmp:
        urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(args.urls)]
        url_file = f"{tmp}/urls.parquet"
        pq.write_table(pa.table({"url": urls}), url_file)
        print(f"{'round':>5} {'side':<12} {'seconds':>8} {'images':>7} {'images/s':>9}")
        for round_ in range(args.rounds):
            # Which side goes first flips every round, so load from other processes hits both alike.
            for side in ("img2dataset", "ours") if round_ % 2 == 0 else ("ours", "img2dataset"):
                note = ""
                if side == "ours":
                    seconds, ok = run_ours(urls, args.threads, args.image_size)
                else:
                    seconds, ok, wall = run_img2dataset(url_file, args.threads, args.urls, args.image_size)
                    note = f"   (command wall {wall:.1f} s)"
                seconds_total[side] += seconds
                images_total[side] += ok
                print(f"{round_:>5} {side:<12} {seconds:>8.2f} {ok:>7} {ok / seconds:>9.1f}{note}")
    return {side: images_total[side] / seconds_total[side] for side in seconds_total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=1200)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="640x480,1024x768,1600x1200", help="served sizes, WxH,WxH,...")
    parser.add_argument("--image-size", type=int, default=256, help="stored shortest side")
    parser.add_argument(
        "--content", choices=("synthetic", "photos"), default="synthetic", help="served JPEGs"
    )
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",")]
    print(
        f"{args.urls} URLs from 127.0.0.1, {args.content} JPEGs of {args.sizes} -> {args.image_size} px, ",
        end="",
    )
    print(f"{args.threads} threads, 1 process")
    rates = throughput(args, sizes)
    print(f"all rounds: ours {rates['ours']:.1f} images/s, img2dataset {rates['img2dataset']:.1f} images/s")
    print(f"stored quality, mean PSNR in dB over the {DISTINCT_IMAGES} served images:")
    table = quality(sizes, args.image_size, args.content)
    names = list(next(iter(table.values())))
    print(f"  {'size':<10}" + "".join(f"{name:>22}" for name in names))
    for (width, height), row in table.items():
        print(f"  {f'{width}x{height}':<10}" + "".join(f"{row[name]:>22.2f}" for name in names))
    print(f"RESULT fetch_vs_img2dataset {rates['ours'] / rates['img2dataset']:.2f} (target >= 2.0)")


if __name__ == "__main__":
    main()
