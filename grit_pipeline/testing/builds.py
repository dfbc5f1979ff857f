"""One `grit build` over served URLs, as a process of its own, and the figures of its run manifest.

The build runs on Beam's local runner unless ``extra`` names another, with the caller's detector
options; its peak resident memory comes from the kernel (``wait4``'s ``ru_maxrss``: the largest
single process, so the launcher in multi_processing mode), its rows per second from the manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def write_input(rows: int, port: int, path: str) -> str:
    """A url table of ``rows`` rows: ``/img/I.jpg`` on 127.0.0.1:PORT, ``CAPTIONS`` in rotation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(rows)]
    pq.write_table(
        pa.table({"url": urls, "caption": [CAPTIONS[i % len(CAPTIONS)] for i in range(rows)]}), path
    )
    return path


def run_build(
    rows: int, port: int, tmp: str, threads: int, extra: tuple[str, ...] = (), name: str = ""
) -> dict:
    """`grit build` of ``rows`` served URLs into TMP/out-ROWS-NAME (the tiny detector unless ``extra``
    names one): {"rows", "accepted", "rejected", "run_s", "command_s", "rows_per_s", "peak_mib", "busy"}."""
    source = write_input(rows, port, f"{tmp}/in-{rows}.parquet")
    out = f"{tmp}/out-{rows}-{name or 'build'}"
    argv = [sys.executable, "-m", "grit_pipeline.beam_jobs.job", "--input", source]
    argv += ["--output", out, "--detector", "tiny-random", "--allow-network", "127.0.0.1/32"]
    argv += ["--max-host-connections", "0", "--max-host-rate", "0"]  # one loopback host serves every URL
    argv += ["--progress-interval", "60", "--threads", str(threads), "--mode", "overwrite", *extra]
    # No OMP_NUM_THREADS: thread pools are sized by the job (--detector-threads), as for a user.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
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
