"""The default test suite while busy processes load the CPU (``make test-busy``).

CI runs on a machine that may still be busy, and users run the tests on laptops doing other
work, so no test may depend on how fast the machine is or how its threads are scheduled. This
starts ``--busy`` plain Python busy loops (default 2: both cores of the 2-core CI machine), runs
``python -m pytest -q`` (extra arguments are passed on) ``--runs`` times in a row, stopping at the
first failure, and stops the loops whatever happens. Each loop also ends by itself once this
process is gone or after ``--max-s``, so none outlives an interrupted run. It fails if a loop
ended before the suite did: the suite would not have run under the load it claims.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

BUSY_LOOP = """
import os, sys, time
parent, end_s = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while os.getppid() == parent and time.monotonic() < end_s:
    for _ in range(100_000):
        pass
"""


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy loops (processes) beside the suite")
    parser.add_argument(
        "--runs", type=int, default=1, help="suite runs in a row (stops at the first failure)"
    )
    parser.add_argument(
        "--max-s", type=float, default=4 * 3600, help="each busy loop ends by itself after this"
    )
    args, pytest_args = parser.parse_known_args(argv)
    if args.busy < 1 or args.runs < 1 or args.max_s <= 0:
        parser.error(f"--busy and --runs must be at least 1 and --max-s above 0, got {args}")
    return args, pytest_args


def start_busy(count: int, max_s: float) -> list[subprocess.Popen]:
    command = [sys.executable, "-c", BUSY_LOOP, str(os.getpid()), str(max_s)]
    return [subprocess.Popen(command) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def run_suite(pytest_args: list[str]) -> int:
    suite = subprocess.Popen([sys.executable, "-m", "pytest", "-q", *pytest_args])
    try:
        return suite.wait()
    finally:  # interrupted: the suite goes too
        if suite.poll() is None:
            suite.kill()
            suite.wait()


def main(argv: list[str] | None = None) -> int:
    args, pytest_args = parse_args(argv)
    busy = start_busy(args.busy, args.max_s)
    try:
        for run in range(1, args.runs + 1):
            start_s = time.monotonic()
            code = run_suite(pytest_args)
            took = f"{time.monotonic() - start_s:.0f} s"
            print(
                f"test-busy: run {run}/{args.runs}: pytest exit {code} in {took} beside {args.busy} busy loops",
                flush=True,
            )
            if any(process.poll() is not None for process in busy):
                print(
                    f"test-busy: a busy loop ended before the suite did (raise --max-s {args.max_s:g})",
                    flush=True,
                )
                return 1
            if code:
                return code
        return 0
    finally:
        stop(busy)


if __name__ == "__main__":
    sys.exit(main())
