"""End-to-end `grit build` throughput and peak memory (tiny detector): input sizes, or thread pools.

A loopback HTTP server (``grit_pipeline.testing.served``, in a process of its own) serves one
distinct URL per row (320 x 240 JPEGs). Each build runs as its own process on Beam's local runner,
with the tiny random detector (``grit_pipeline.testing.builds``), and we read its peak resident
memory from the kernel (``wait4``'s ``ru_maxrss``: the largest single process, so the launcher in
multi_processing mode) and its rows per second from the run manifest.

Default: in-process at two sizes. Memory must not grow with the input: the last line is the ratio
of the peak at the larger size to the peak at the smaller one (target <= 1.2).

``--threads-compare``: each worker's torch pool sized as torch does by default (every core:
``--detector-threads CORES``, what the job did before) against the job's default (the cores shared
by the local workers), in-process and in multi_processing mode (2 workers), alternating; the last
line is the multi_processing speed-up (rows/s after / before, target > 1).

    python benchmarks/build.py                       # 1,000 and 10,000 rows
    python benchmarks/build.py --sizes 500 2000      # a quicker pair
    python benchmarks/build.py --threads-compare --rows 400
"""

from __future__ import annotations

import argparse
import os
import tempfile

from grit_pipeline.testing.builds import run_build
from grit_pipeline.testing.served import served_jpegs

MULTI = ("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")


THREAD_CASES = {  # name -> extra argv; "before" sizes each worker's torch pool as torch does
    "in-process, before": ("--detector-threads", str(os.cpu_count() or 1)),
    "in-process, after": (),
    "multi_processing, before": ("--detector-threads", str(os.cpu_count() or 1), *MULTI),
    "multi_processing, after": MULTI,
}


def threads_compare(rows: int, port: int, tmp: str, threads: int, rounds: int) -> None:
    """Rows/s per case, best of ``rounds`` (cases alternate, so load from elsewhere hits all alike)."""
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, extra in THREAD_CASES.items():
            result = run_build(rows, port, tmp, threads, extra, name.replace(", ", "-").replace(" ", ""))
            if name not in best or result["rows_per_s"] > best[name]["rows_per_s"]:
                best[name] = result
    print(f"{os.cpu_count()} cores, {rows} rows, best of {rounds}")
    print(f"{'case':<26} {'rows/s':>7} {'run s':>7} {'peak MiB':>9}  busy seconds per stage")
    for name, r in best.items():
        busy = ", ".join(f"{k} {v:.0f}" for k, v in r["busy"].items())
        print(f"{name:<26} {r['rows_per_s']:>7.1f} {r['run_s']:>7.1f} {r['peak_mib']:>9.0f}  {busy}")
    for mode in ("in-process", "multi_processing"):
        ratio = best[f"{mode}, after"]["rows_per_s"] / best[f"{mode}, before"]["rows_per_s"]
        print(f"RESULT build_threads_speedup_{mode.replace('-', '_')} {ratio:.2f} (target > 1)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--threads", type=int, default=16, help="downloads in flight per worker")
    parser.add_argument("--threads-compare", action="store_true", help="torch pool sizes, both modes")
    parser.add_argument("--rows", type=int, default=400, help="rows per build with --threads-compare")
    parser.add_argument("--rounds", type=int, default=2, help="rounds with --threads-compare")
    args = parser.parse_args(argv)
    count = args.rows if args.threads_compare else max(args.sizes)
    results = []
    with served_jpegs(count) as port, tempfile.TemporaryDirectory() as tmp:
        if args.threads_compare:
            threads_compare(args.rows, port, tmp, args.threads, args.rounds)
        else:
            for rows in args.sizes:
                results.append(run_build(rows, port, tmp, args.threads))
    if not results:
        return
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
