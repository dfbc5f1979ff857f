"""Wall time of `grit build` on each runner: the bundled example and a loopback build of N rows.

Runners: the local runner in process and with ``multi_processing`` (2 workers), the portable
runner (Beam's embedded job service, SDK workers from a worker pool process), Spark ``local[2]``
and Flink ``[local]`` (their job servers from ``make job-servers``), and the two clusters of
``beam_jobs/clusters.py`` (``spark-cluster``: a standalone master and 2 workers; ``flink-cluster``:
a JobManager and 2 TaskManagers; SDK workers from Beam's boot program installing the wheel,
``make clusters``), which also print the launcher's live ``job:`` lines and its ``workers:`` line
(SDK processes and detector copies). Each build runs as its own
`grit build` process with the tiny random detector; "command s" is the whole process (imports,
job server start), "run s" the manifest's wall time from the run's start to its commit.

The last line is the slowest runner's command time over the in-process local runner's on the
N-row build (no target: it says what a portable runner costs on one machine).

    python benchmarks/runners.py                               # example + 200 rows, every runner
    python benchmarks/runners.py --rows 50 --runners local portable
    python benchmarks/runners.py --rows 200 --runners spark-cluster flink-cluster --no-example
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grit_pipeline.testing.builds import write_input
from grit_pipeline.testing.served import served_jpegs

RUNNERS = {
    "local": [],
    "multi_processing": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    "portable": ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL"],
    "spark": ["--runner", "SparkRunner", "--spark_master_url", "local[2]"],
    "flink": ["--runner", "FlinkRunner", "--flink_master", "[local]"],
    "spark-cluster": [],  # the cluster's own flags, added once it runs
    "flink-cluster": [],
}
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_pool() -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    return pool, f"localhost:{port}"


def build(what: list[str], runner: list[str], out: str) -> dict:
    argv = [sys.executable, "-m", "grit_pipeline.beam_jobs.job", *what, "--output", out]
    argv += ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--progress-interval", "60"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([*argv, *runner], env=env, capture_output=True, text=True, check=False)
    command_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"grit build failed ({' '.join(runner)}): {done.stderr[-3000:]}")
    manifest = json.loads(Path(out, "manifest.json").read_text())
    lines = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(("grit build: job:", "grit build: workers:"))
    ]
    return {
        "command_s": command_s,
        "run_s": manifest["timings"]["wall_s"],
        "counts": manifest["counts"],
        "lines": lines,
    }


def cluster_build(kind: str, what: list[str], out: str, tmp: str) -> dict:
    """One build on a freshly started cluster of ``kind``, SDK workers installing the project's wheel."""
    from grit_pipeline.beam_jobs import clusters
    from grit_pipeline.testing.wheel import build_wheel

    wheel = build_wheel(Path(tmp, f"dist-{kind}"), Path(tmp, f"source-{kind}"), root=ROOT)
    with clusters.running(kind, Path(tmp, f"cluster-{kind}")) as cluster:
        flags = [*cluster.beam_argv, *clusters.process_environment(), "--extra_package", str(wheel)]
        flags += ["--artifacts_dir", f"{tmp}/artifacts-{kind}", "--progress-interval", "10"]
        return build(what, flags, out)


def run_all(args, port: int, results: list) -> None:
    """Every input on every runner asked for, appending (runner, input, figures) to ``results``."""
    pool, endpoint = start_pool()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = write_input(args.rows, port, f"{tmp}/in.parquet")
            inputs = {"example": ["--example"], f"{args.rows} rows": ["--input", source]}
            if args.no_example:
                del inputs["example"]
            for name in args.runners:
                runner = RUNNERS[name] + (["--environment_config", endpoint] if name == "portable" else [])
                for label, what in inputs.items():
                    out = f"{tmp}/{name}-{label.replace(' ', '-')}"
                    if name.endswith("-cluster"):
                        result = cluster_build(name.split("-")[0], what, out, tmp)
                    else:
                        result = build(what, runner, out)
                    results.append((name, label, result))
                    print(f"  {name:<17} {label:<9} {result['command_s']:7.1f} s", file=sys.stderr)
                    for line in result["lines"]:
                        print(f"    {line}", file=sys.stderr)
    finally:
        pool.terminate()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--runners", nargs="+", choices=sorted(RUNNERS), default=list(RUNNERS))
    parser.add_argument("--no-example", action="store_true", help="only the N-row build")
    args = parser.parse_args(argv)
    results = []
    with served_jpegs(args.rows) as port:
        run_all(args, port, results)
    print(f"{'runner':<17} {'input':<9} {'command s':>9} {'run s':>7} {'rows':>5} {'accepted':>8}")
    for name, label, r in results:
        print(
            f"{name:<17} {label:<9} {r['command_s']:>9.1f} {r['run_s']:>7.1f} {r['counts']['input']:>5}"
            f" {r['counts']['accepted']:>8}"
        )
    big = {name: r["command_s"] for name, label, r in results if label != "example"}
    slowest = max(big, key=big.get)
    base = big.get("local", min(big.values()))
    print(f"RESULT runners_slowest_vs_local {big[slowest] / base:.2f} ({slowest}; no target)")


if __name__ == "__main__":
    main()
