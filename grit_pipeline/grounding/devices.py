"""Which device a worker's detector uses and how many threads a worker process may take.

GPU workers: one detector per GPU, not one per vCPU. The job's GPU recipe runs one SDK process per
machine (Dataflow: ``--experiments=no_use_multiple_sdk_containers``; Spark/Flink:
``--sdk_worker_parallelism 1``, Beam's default); inside it Beam runs bundles in several threads,
one ``GroundFn`` instance each, and ``choose_device`` spreads those instances over the machine's
GPUs (instance N -> GPU N mod count), where one shared detector per device serves them. Chosen
over ``MultiProcessShared`` (one model server per GPU for many SDK processes): that proxy would
pickle every pixel batch across processes, while the CPU stages that would want more processes
(download, decode, resize) already run in thread pools that release the GIL.

Threads: a process takes the cores it may use (its CPU affinity, capped by a cgroup CPU quota)
divided by the SDK processes on its machine, which register themselves under ``registry``: on
every runner, not only the local one, no process takes every core for torch and its pools.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REGISTRY = Path(tempfile.gettempdir()) / "grit-pipeline-sdk-processes"


def choose_device(requested: str, gpu_count: int, slot: int) -> str:
    """The device of detector instance ``slot``: ``auto``/``cuda`` -> ``cuda:(slot mod GPUs)``.

    >>> choose_device("auto", 4, 5), choose_device("auto", 0, 5), choose_device("cuda:1", 4, 0)
    ('cuda:1', 'cpu', 'cuda:1')
    """
    if requested not in ("auto", "cuda"):
        return requested  # an explicit "cpu" or "cuda:K" stands
    if gpu_count == 0:
        return (
            "cpu" if requested == "auto" else "cuda"
        )  # "cuda" without a GPU fails where it loads, in one line
    return f"cuda:{slot % gpu_count}"


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores the cgroup v2 CPU quota allows (``cpu.max``: "QUOTA PERIOD" or "max PERIOD"), or None."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def usable_cores(affinity: int | None = None, quota: float | None = None) -> int:
    """Cores this process may run on: its affinity set, capped by a CPU quota (at least 1)."""
    affinity = affinity if affinity is not None else len(os.sched_getaffinity(0))
    quota = quota if quota is not None else cpu_quota()
    return max(1, min(affinity, int(quota)) if quota else affinity)


def threads_per_process(cores: int, processes: int) -> int:
    """Each of ``processes`` SDK processes of a machine gets an equal share of its ``cores``.

    >>> threads_per_process(8, 8), threads_per_process(8, 1), threads_per_process(2, 3)
    (1, 8, 1)
    """
    return max(1, cores // max(1, processes))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sdk_processes_here(registry: Path = REGISTRY) -> int:
    """Register this process and count the live registered ones (dead ones' files are removed)."""
    registry.mkdir(parents=True, exist_ok=True)
    (registry / str(os.getpid())).touch()
    alive = 0
    for entry in registry.iterdir():
        if not entry.name.isdigit():
            continue
        if _alive(int(entry.name)):
            alive += 1
        else:
            entry.unlink(missing_ok=True)
    return max(1, alive)
