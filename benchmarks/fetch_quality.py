"""Stored-image quality on real photos: our fetch stage vs. img2dataset's own command, same URLs.

The bundled photos, tiled at native resolution into web-photo sizes (800 x 600 to 3000 x 2000 by
default; JPEG quality 92, ``grit_pipeline.testing.photo_mosaic_jpeg``), are served from 127.0.0.1.
img2dataset's command (``--image_size 256 --resize_mode keep_ratio``, parquet output, its default
JPEG quality 95) and our fetch stage (``Fetcher``, what ``grit build`` runs, same size and quality)
each store every image once. Each stored image is compared with an exact area average (float,
unrounded) of the decoded original; per source size the table gives the mean PSNR of each side,
ours minus theirs (target: no lower than -0.5 dB), and ours against theirs.

    python benchmarks/fetch_quality.py [--sizes 800x600,1024x683,...] [--image-size 256]
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import subprocess
import tempfile

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from grit_pipeline.fetch import FetchConfig, FetchedImage, Fetcher
from grit_pipeline.testing import psnr_db
from grit_pipeline.testing.served import DISTINCT_IMAGES, photo_bodies, served_photos

DEFAULT_SIZES = "800x600,1024x683,1200x900,1600x1200,2000x1333,3000x2000"


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def img2dataset_images(urls: list[str], image_size: int) -> dict[str, bytes]:
    """url -> stored bytes, from img2dataset's own command (one process, parquet output)."""
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({"url": urls}), f"{tmp}/urls.parquet")
        argv = ["img2dataset", "--url_list", f"{tmp}/urls.parquet", "--input_format", "parquet"]
        argv += ["--output_folder", f"{tmp}/out", "--output_format", "parquet", "--processes_count", "1"]
        argv += ["--thread_count", "8", "--image_size", str(image_size), "--resize_mode", "keep_ratio"]
        argv += ["--enable_wandb", "False", "--retries", "0", "--timeout", "30"]
        subprocess.run(argv, check=True, capture_output=True)
        table = pa.concat_tables(
            pq.read_table(p, columns=["url", "jpg"]) for p in glob.glob(f"{tmp}/out/*.parquet")
        )
    return {url: data for url, data in zip(table["url"].to_pylist(), table["jpg"].to_pylist()) if data}


def our_images(urls: list[str], image_size: int) -> dict[str, bytes]:
    config = FetchConfig(
        allow_private_addresses=True, image_size=image_size, retries=0, max_host_connections=0
    )
    fetcher = Fetcher(config)
    try:
        fetched = fetcher.fetch_all(enumerate(urls))
    finally:
        fetcher.close()
    return {urls[i]: result.image for i, result in fetched if isinstance(result, FetchedImage)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="served sizes, WxH,WxH,...")
    parser.add_argument("--image-size", type=int, default=256, help="stored shortest side")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes.split(",")]
    with served_photos(DISTINCT_IMAGES, sizes, "photos") as port:
        urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(DISTINCT_IMAGES)]
        theirs, ours = img2dataset_images(urls, args.image_size), our_images(urls, args.image_size)
    rows: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for url, (size, original) in zip(urls, photo_bodies(sizes, "photos")):
        if url not in ours or url not in theirs:
            print(f"  {url}: not stored by {'ours' if url not in ours else 'img2dataset'}")
            continue
        stored_ours, stored_theirs = rgb(ours[url]), rgb(theirs[url])
        if stored_ours.shape != stored_theirs.shape:
            raise SystemExit(
                f"{url}: stored {stored_ours.shape} by ours, {stored_theirs.shape} by img2dataset"
            )
        height, width = stored_ours.shape[:2]
        exact = cv2.resize(rgb(original).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        scores = (
            psnr_db(stored_ours, exact),
            psnr_db(stored_theirs, exact),
            psnr_db(stored_ours, stored_theirs),
        )
        rows.setdefault(size, []).append(scores)
    print(
        f"{len(urls)} real-photo mosaics from 127.0.0.1 -> {args.image_size} px; mean PSNR (dB) of what is stored"
    )
    print(
        f"{'source':<11}{'images':>7}{'ours vs exact':>15}{'img2dataset':>13}{'difference':>12}{'ours vs i2d':>13}"
    )
    for (width, height), scores in rows.items():
        ours_db, theirs_db, between = np.mean(scores, axis=0)
        label, same = f"{width}x{height}", "identical" if between > 100 else f"{between:.2f}"  # MSE 0
        print(
            f"{label:<11}{len(scores):>7}{ours_db:>15.2f}{theirs_db:>13.2f}{ours_db - theirs_db:>+12.2f}{same:>13}"
        )
    everything = np.array([score for scores in rows.values() for score in scores])
    print(
        f"RESULT fetch_quality_difference_db {everything[:, 0].mean() - everything[:, 1].mean():+.2f} (target >= -0.5)"
    )


if __name__ == "__main__":
    main()
