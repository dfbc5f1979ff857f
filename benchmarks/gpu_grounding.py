"""GPU grounding throughput, to run once on a CUDA machine (under 5 minutes): images/s, utilisation,
peak memory and GPU-hours per million images, for the detector alone and for a full `grit build`.

1. Detector alone: the real grounding-dino-tiny architecture (``grit_pipeline.testing.detectors``),
   random weights, bf16 autocast, 640x480 images at the processor's 800 px, ``HFDetector.ground``
   (our preprocessing, forward, span scoring, NMS) at batch 8, 16 and 32, after one warm-up batch.
2. Full build: that model saved with ``save_pretrained``, `grit build --device cuda` over a loopback
   HTTP server (800x600 JPEGs, one URL per row), in-process, at the best batch size of part 1;
   rows/s from the run manifest.

GPU utilisation is sampled by ``nvidia-smi`` every 200 ms during each part (mean, and peak memory
used); part 1 also reports ``torch.cuda.max_memory_allocated``. GPU-hours per million images is
1e6 / images/s / 3600. The last line is that figure for the full build.

    python benchmarks/gpu_grounding.py                 # on a CUDA machine
    python benchmarks/gpu_grounding.py --dry-run       # CPU, tiny model, a few rows: checks every step
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the detectors here are built in code

import torch

from grit_pipeline.testing.builds import run_build
from grit_pipeline.testing.detectors import build_detector, make_requests, time_wrapper
from grit_pipeline.testing.served import served_jpegs


class GpuSampler:
    """``nvidia-smi`` polled in the background: mean utilisation (%) and peak memory used (MiB)."""

    def __init__(self, enabled: bool):
        self._enabled, self._proc, self.util, self.mem = enabled, None, [], []

    def __enter__(self):
        if self._enabled:
            query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
            self._proc = subprocess.Popen([*query, "-lms", "200"], stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc):
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        for line in out.splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 2 and fields[0].isdigit():
                self.util.append(int(fields[0]))
                self.mem.append(int(fields[1]))

    def summary(self) -> str:
        if not self.util:
            return "n/a"
        return f"{sum(self.util) / len(self.util):.0f} % mean, {max(self.mem)} MiB peak"


def make_detector(args):
    """The benchmark's detector: grounding-dino-tiny's architecture, or the tiny test one (dry run)."""
    from grit_pipeline.grounding import tiny

    config = tiny.tiny_config(len(tiny.caption_vocab())) if args.dry_run else None
    detector = build_detector(args.image_side, args.max_side, args.device, config)
    if detector.device.type == "cuda":
        from dataclasses import replace

        detector.config = replace(detector.config, cuda_dtype="bfloat16")
    return detector


def detector_part(detector, batch_sizes, batches: int) -> dict[int, float]:
    """Images/s of ``detector.ground`` per batch size (``batches`` timed batches after a warm-up)."""
    speeds = {}
    for batch_size in batch_sizes:
        detector.batch_size = batch_size
        requests = make_requests(batch_size)
        time_wrapper(detector, requests)  # warm-up: kernels, allocator
        seconds = sum(time_wrapper(detector, requests) for _ in range(batches))
        speeds[batch_size] = batch_size * batches / seconds
        print(f"  batch {batch_size}: {speeds[batch_size]:.1f} images/s", file=sys.stderr)
    return speeds


def build_part(detector, args, batch_size: int, tmp: str) -> dict:
    """One `grit build` over the loopback server with the benchmark's detector saved to a folder."""
    folder = Path(tmp, "detector")
    detector.model.save_pretrained(folder)
    detector.processor.save_pretrained(folder)
    extra = ("--detector", str(folder), "--device", args.device, "--detector-batch-size", str(batch_size))
    extra += ("--box-threshold", "0.3")
    with served_jpegs(args.rows, args.build_image, distinct=20) as port:
        result = run_build(args.rows, port, tmp, threads=32, extra=extra, name="gpu")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, few rows: check every step")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 8 16 32")
    parser.add_argument("--batches", type=int, default=None, help="timed batches per size (default 10)")
    parser.add_argument("--rows", type=int, default=None, help="rows of the full build (default 2000)")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.image_side, args.max_side, args.build_image = "cpu", 96, 160, (160, 120)
        args.batch_sizes, args.batches, args.rows = (
            args.batch_sizes or [1, 2],
            args.batches or 1,
            args.rows or 6,
        )
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device here: run on a GPU machine, or pass --dry-run", file=sys.stderr)
            return 2
        args.device, args.image_side, args.max_side, args.build_image = "cuda", 800, 1333, (800, 600)
        args.batch_sizes, args.batches, args.rows = (
            args.batch_sizes or [8, 16, 32],
            args.batches or 10,
            args.rows or 2000,
        )
    gpu = not args.dry_run
    detector = make_detector(args)
    with GpuSampler(gpu) as sampler:
        speeds = detector_part(detector, args.batch_sizes, args.batches)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0
    best = max(speeds, key=speeds.get)
    with tempfile.TemporaryDirectory() as tmp, GpuSampler(gpu) as build_sampler:
        start = time.perf_counter()
        build = build_part(detector, args, best, tmp)
        print(f"  build: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"device {detector.device}, {args.image_side} px shortest side, bf16 autocast on CUDA")
    print(f"{'part':<22} {'batch':>5} {'images/s':>9} {'GPU-h / 1M':>11}  GPU")
    for batch_size, speed in speeds.items():
        print(
            f"{'detector.ground':<22} {batch_size:>5} {speed:>9.1f} {1e6 / speed / 3600:>11.2f}  {sampler.summary()}"
        )
    rate = build["rows_per_s"]
    print(
        f"{'grit build (full)':<22} {best:>5} {rate:>9.1f} {1e6 / rate / 3600:>11.2f}  {build_sampler.summary()}"
    )
    print(
        f"torch peak memory allocated (detector part): {peak_gib:.2f} GiB; build rows {build['rows']}, "
        f"accepted {build['accepted']}, rejected {build['rejected']}"
    )
    print(f"RESULT gpu_hours_per_million_images {1e6 / rate / 3600:.2f} (full build; lower is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
