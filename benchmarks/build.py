"""End-to-end `grit build` throughput and peak memory at two input sizes (tiny detector).

A loopback HTTP server (tests/http_server.py, in a process of its own) serves one distinct URL
per row (320 x 240 JPEGs). For each size the job runs as its own process on Beam's local runner
(in-process mode), with the tiny random detector, and we read its peak resident memory from the
kernel (``wait4``'s ``ru_maxrss``) and its rows per second from the run manifest.

Memory must not grow with the input: the last line is the ratio of the peak at the larger size to
the peak at the smaller one (target <= 1.2).

    python benchmarks/build.py                       # 1,000 and 10,000 rows
    python benchmarks/build.py --sizes 500 2000      # a quicker pair
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pyarrow as pa
import pyarrow.parquet as pq
from http_server import LoopbackServer, Route, jpeg_bytes

CAPTIONS = [
    "a red square on a grey background",
    "a dog chasing a ball in the park",
    "two people riding bikes on a street",
    "a cup of coffee on a wooden table",
    "a man holding an umbrella in the rain",
    "a white cat sitting on a sofa near a window",
    "a plate of food with bread and salad",
    "a small boat on a lake under a cloudy sky",
]


def serve(count: int, ports, stop) -> None:
    bodies = [jpeg_bytes(320, 240, (i * 5 % 255, 90, 200)) for i in range(50)]
    with LoopbackServer() as server:
        for i in range(count):
            server.add(f"/img/{i}.jpg", Route(bodies[i % len(bodies)]))
        ports.put(server.port)
        stop.wait()


def run_build(rows: int, port: int, tmp: str, threads: int) -> dict:
    table = pa.table(
        {
            "url": [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(rows)],
            "caption": [CAPTIONS[i % len(CAPTIONS)] for i in range(rows)],
        }
    )
    pq.write_table(table, f"{tmp}/in-{rows}.parquet")
    out = f"{tmp}/out-{rows}"
    argv = [sys.executable, "-m", "grit_pipeline.beam_jobs.job", "--input", f"{tmp}/in-{rows}.parquet"]
    argv += ["--output", out, "--detector", "tiny-random", "--allow-network", "127.0.0.1/32"]
    argv += ["--progress-interval", "60", "--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "2"}
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"grit build failed for {rows} rows: {child.stderr.read()[-3000:]}")
    manifest = json.loads(Path(out, "manifest.json").read_text())
    counts, timings = manifest["counts"], manifest["timings"]
    return {
        "rows": rows,
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "run_s": timings["wall_s"],
        "command_s": wall,
        "rows_per_s": counts["input"] / timings["wall_s"],
        "peak_mib": usage.ru_maxrss / 1024,  # Linux reports kilobytes
        "busy": timings["stage_busy_s"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    ports, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(max(args.sizes), ports, stop), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.sizes:
            results.append(run_build(rows, port, tmp, args.threads))
    stop.set()
    server.join(timeout=10)
    print(
        f"{'rows':>7} {'accepted':>8} {'rejected':>8} {'run s':>8} {'rows/s':>7} {'peak MiB':>9}  busy seconds per stage"
    )
    for r in results:
        busy = ", ".join(f"{k} {v:.0f}" for k, v in r["busy"].items())
        print(
            f"{r['rows']:>7} {r['accepted']:>8} {r['rejected']:>8} {r['run_s']:>8.1f} {r['rows_per_s']:>7.1f}"
            f" {r['peak_mib']:>9.0f}  {busy}"
        )
    ratio = results[1]["peak_mib"] / results[0]["peak_mib"]
    print(f"RESULT build_peak_memory_ratio {ratio:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
