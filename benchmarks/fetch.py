"""Fetch stage throughput: our ``Fetcher`` vs. img2dataset's own command, on the same URLs.

A loopback HTTP server (tests/http_server.py, in a process of its own) serves N distinct-path JPEGs (640 x 480, so both
sides decode, resize to 256 on the shortest side and re-encode). Both sides get the same thread
count and one process:

* ours:        ``Fetcher.fetch_all`` (guarded opener, retries, header check, img2dataset's Resizer)
               in a fresh process; its time excludes start-up too;
* img2dataset: ``img2dataset --url_list ... --processes_count 1 --thread_count T`` with
               ``--resize_mode keep_ratio --image_size 256``; its time is the download phase it
               reports in its own ``*_stats.json`` (start-up excluded, which favours it).

The two alternate, the order flipping every round, and each side's images per second is taken
over all its rounds. The last line is the ratio of ours to img2dataset's (target >= 1.0).

    python benchmarks/fetch.py                 # 2,000 URLs, 16 threads, 4 rounds
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pyarrow as pa
import pyarrow.parquet as pq
from http_server import LoopbackServer, Route, jpeg_bytes

from grit_pipeline.fetch import FetchConfig, FetchedImage, Fetcher


def _ours_in_child(urls: list[str], threads: int, results: multiprocessing.Queue) -> None:
    config = FetchConfig(allow_private_addresses=True, thread_count=threads, image_size=256, retries=0)
    fetcher = Fetcher(config)
    start = time.perf_counter()
    fetched = fetcher.fetch_all(enumerate(urls))
    seconds = time.perf_counter() - start
    fetcher.close()
    results.put((seconds, sum(isinstance(r, FetchedImage) for _, r in fetched)))


def run_ours(urls: list[str], threads: int) -> tuple[float, int]:
    """Our stage in a fresh process of its own, as img2dataset's command gets one; start-up excluded."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_ours_in_child, args=(urls, threads, results))
    child.start()
    seconds, ok = results.get(timeout=600)
    child.join()
    return seconds, ok


def run_img2dataset(url_file: str, threads: int, count: int) -> tuple[float, int, float]:
    with tempfile.TemporaryDirectory() as out:
        argv = ["img2dataset", "--url_list", url_file, "--input_format", "parquet", "--output_folder", out]
        argv += ["--processes_count", "1", "--thread_count", str(threads), "--image_size", "256"]
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


def serve(count: int, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    """The loopback server in its own process, so it does not share a GIL with either side."""
    bodies = [jpeg_bytes(640, 480, (i * 5 % 255, 90, 200)) for i in range(50)]
    with LoopbackServer() as server:
        for i in range(count):
            server.add(f"/img/{i}.jpg", Route(bodies[i % len(bodies)]))
        ports.put(server.port)
        stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    ports, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.urls, ports, stop), daemon=True)
    server.start()
    port = ports.get(timeout=60)
    with tempfile.TemporaryDirectory() as tmp:
        urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(args.urls)]
        url_file = f"{tmp}/urls.parquet"
        pq.write_table(pa.table({"url": urls}), url_file)
        seconds_total = {"ours": 0.0, "img2dataset": 0.0}
        images_total = {"ours": 0, "img2dataset": 0}
        print(f"{args.urls} URLs from 127.0.0.1, 640x480 JPEG -> 256 px, {args.threads} threads, 1 process")
        print(f"{'round':>5} {'side':<12} {'seconds':>8} {'images':>7} {'images/s':>9}")
        for round_ in range(args.rounds):
            # Which side goes first flips every round, so load from other processes hits both alike.
            for side in ("img2dataset", "ours") if round_ % 2 == 0 else ("ours", "img2dataset"):
                note = ""
                if side == "ours":
                    seconds, ok = run_ours(urls, args.threads)
                else:
                    seconds, ok, wall = run_img2dataset(url_file, args.threads, args.urls)
                    note = f"   (command wall {wall:.1f} s)"
                seconds_total[side] += seconds
                images_total[side] += ok
                print(f"{round_:>5} {side:<12} {seconds:>8.2f} {ok:>7} {ok / seconds:>9.1f}{note}")
    stop.set()
    server.join(timeout=10)
    rates = {side: images_total[side] / seconds_total[side] for side in seconds_total}
    print(f"all rounds: ours {rates['ours']:.1f} images/s, img2dataset {rates['img2dataset']:.1f} images/s")
    print(f"RESULT fetch_vs_img2dataset {rates['ours'] / rates['img2dataset']:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
