"""Spark standalone and Flink session clusters on 127.0.0.1, and Beam's Python boot program.

For cluster runs on one machine (the ``clusters`` tests, ``benchmarks/runners.py``, trying a
recipe before a real cluster): every node is its own JVM, and SDK workers start the way a cluster
node starts them, through Beam's ``PROCESS`` environment and Beam's own boot program.

What is fetched, once, into ``~/.cache/grit-pipeline`` (``GRIT_CLUSTER_CACHE``), with the ordinary
clients (``python -m grit_pipeline.beam_jobs.clusters fetch``, ``make clusters``):
- Spark 3.5.0: the jars, ``bin/`` and ``sbin/`` that PyPI's ``pyspark`` sdist carries under ``deps/``.
- Flink 1.19.1: ``bin/`` and ``conf/`` from PyPI's ``apache-flink`` wheel, ``lib/`` and ``plugins/``
  from its ``apache-flink-libraries`` sdist (the two halves of Flink's own distribution).
- Beam's Python boot program at the SDK's version (``go install
  github.com/apache/beam/sdks/v2/python/container@vX``), and ``boot-process.sh`` beside it.

Why the wrapper (read in Beam's ``sdks/python/container/boot.go``): a PROCESS environment runs
its command with ``--id`` and the provision endpoint only, so every SDK worker of a machine would
stage artifacts into the default ``--semi_persist_dir`` ``/tmp/staged``, and boot's own venv is
``/opt/apache/beam-venv/beam-venv-worker-ID``, where ID restarts at 1 in every worker JVM: two
cluster workers on one machine would overwrite each other's staged files and delete each other's
venv. On a real cluster each node has its own ``/opt`` and ``/tmp``; here the wrapper gives each
SDK worker its own folder under ``GRIT_SDK_ROOT``: a fresh venv over the machine's Python
(``--system-site-packages``, as boot makes it) that boot uses as its default environment
(``RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1``), and the semi-persistent folder. Boot then fetches
the staged artifacts and installs the ``--extra_package`` wheel into that venv itself
(``pip install --force-reinstall --no-deps``, then its dependencies), and runs the SDK harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SPARK_VERSION = "3.5.0"  # the Spark the job server is built against (job_servers.SPARK_VERSION)
FLINK_VERSION = "1.19.1"
CACHE_ROOT = Path(os.environ.get("GRIT_CLUSTER_CACHE", Path.home() / ".cache" / "grit-pipeline"))
GO = os.environ.get("GO", shutil.which("go") or "/usr/local/go/bin/go")
BOOT_WRAPPER = """#!/bin/sh
# Beam's PROCESS environment runs this on a cluster node for each SDK worker: a folder of its own
# (a fresh venv over the machine's Python, the staged artifacts), then Beam's boot program.
set -e
root="${GRIT_SDK_ROOT:-${TMPDIR:-/tmp}}"
mkdir -p "$root"
dir=$(mktemp -d "$root/sdk-XXXXXX")
"${GRIT_SDK_PYTHON:-python3}" -m venv --system-site-packages "$dir/venv"
export RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT=1 VIRTUAL_ENV="$dir/venv" PATH="$dir/venv/bin:$PATH"
exec "$(dirname "$0")/boot" "$@" --semi_persist_dir="$dir"
"""


class ClusterUnavailableError(RuntimeError):
    """A distribution or the boot program could not be fetched or built, or a cluster did not start."""


def _run(command: list[str], what: str, **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise ClusterUnavailableError(f"{what} failed ({' '.join(command[:4])} ...): {done.stderr[-400:]}")


def _pip_download(spec: str, folder: Path, binary: bool) -> Path:
    """One distribution file of ``spec`` (name==version) in ``folder``, downloaded by pip unless there."""
    name, version = spec.split("==")
    stem = f"{name}_{version}".replace("-", "_")
    found = (
        [p for p in folder.glob("*") if p.name.replace("-", "_").startswith(stem)] if folder.exists() else []
    )
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        kind = ["--only-binary", ":all:"] if binary else []  # pyspark and the Flink libraries are sdists only
        _run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *kind, spec, "-d", str(folder)],
            f"pip download {spec}",
        )
        found = [p for p in folder.glob("*") if p.name.replace("-", "_").startswith(stem)]
    if not found:
        raise ClusterUnavailableError(f"pip download {spec} left no file in {folder}")
    return found[0]


def _extract(archive: Path, prefix: str, target: Path) -> None:
    """Members of ``archive`` under ``prefix`` into ``target`` (the prefix cut off)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as whl:
            for info in whl.infolist():
                if info.filename.startswith(prefix) and not info.is_dir():
                    out = target / info.filename[len(prefix) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(whl.read(info))
        return
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            if member.name.startswith(prefix) and member.name != prefix.rstrip("/"):
                member.name = member.name[len(prefix) :]
                members.append(member)
        tar.extractall(target, members=members, filter="data")


def _fresh(target: Path, build) -> Path:
    """``target`` built once: into a temporary sibling, then renamed (a half-built one never counts)."""
    if target.exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    tmp.rename(target)
    return target


def spark_home() -> Path:
    """Spark's distribution (bin/, sbin/, jars/) from PyPI's pyspark sdist, unpacked once."""

    def build(tmp: Path) -> None:
        sdist = _pip_download(f"pyspark=={SPARK_VERSION}", CACHE_ROOT / "downloads", binary=False)
        _extract(sdist, f"pyspark-{SPARK_VERSION}/deps/", tmp)
        for script in (*(tmp / "bin").iterdir(), *(tmp / "sbin").iterdir()):
            script.chmod(0o755)

    return _fresh(CACHE_ROOT / f"spark-{SPARK_VERSION}", build)


def flink_home() -> Path:
    """Flink's distribution: bin/ and conf/ from the apache-flink wheel, lib/ and plugins/ from its libraries."""

    def build(tmp: Path) -> None:
        downloads = CACHE_ROOT / "downloads"
        wheel = _pip_download(f"apache-flink=={FLINK_VERSION}", downloads, binary=True)
        libraries = _pip_download(f"apache-flink-libraries=={FLINK_VERSION}", downloads, binary=False)
        _extract(wheel, "pyflink/bin/", tmp / "bin")
        _extract(wheel, "pyflink/conf/", tmp / "conf")
        _extract(libraries, f"apache-flink-libraries-{FLINK_VERSION}/deps/", tmp)
        for script in (tmp / "bin").iterdir():
            script.chmod(0o755)

    return _fresh(CACHE_ROOT / f"flink-{FLINK_VERSION}", build)


def beam_version() -> str:
    from apache_beam.version import __version__

    return __version__


def boot_program() -> Path:
    """``boot-process.sh`` beside Beam's Python boot program, built once at the SDK's version with Go."""
    version = beam_version()

    def build(tmp: Path) -> None:
        if not Path(GO).exists():
            raise ClusterUnavailableError(f"building Beam's boot program needs Go (looked for {GO}; set GO=)")
        module = f"github.com/apache/beam/sdks/v2/python/container@v{version}"
        _run([GO, "install", module], f"go install {module}", env={**os.environ, "GOBIN": str(tmp)})
        (tmp / "container").rename(tmp / "boot")
        wrapper = tmp / "boot-process.sh"
        wrapper.write_text(BOOT_WRAPPER)
        wrapper.chmod(0o755)

    return _fresh(CACHE_ROOT / f"beam-boot-{version}", build) / "boot-process.sh"


def process_environment(sdk_root: str | None = None) -> list[str]:
    """Beam flags for SDK workers started by the boot program (``--environment_type PROCESS``)."""
    config: dict = {"command": str(boot_program())}
    if sdk_root:
        config["env"] = {"GRIT_SDK_ROOT": sdk_root}
    return ["--environment_type", "PROCESS", "--environment_config", json.dumps(config)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:  # 127.0.0.1 only
        return json.load(response)


@dataclass
class Node:
    """One cluster JVM, started in the foreground (its scripts ``exec`` java), stopped by its pid."""

    name: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""


@dataclass
class Cluster:
    """A running cluster: its nodes, the Beam flags that submit to it, and where it logs."""

    kind: str
    nodes: list[Node]
    beam_argv: list[str]
    folder: Path

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def _start(name: str, command: list[str], env: dict, folder: Path) -> Node:
    log = folder / f"{name}.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    return Node(name, process, log)


def _wait_until(ready, nodes: list[Node], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for node in nodes:
            if node.process.poll() is not None:
                raise ClusterUnavailableError(f"{what}: {node.name} exited: {node.tail()}")
        try:
            if ready():
                return
        except OSError:
            pass  # not listening yet
        time.sleep(1)
    raise ClusterUnavailableError(f"{what}: not ready after {timeout_s:.0f} s: {nodes[-1].tail()}")


def _node_env(folder: Path, worker: str | None = None) -> dict:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1"}
    if worker:  # the SDK workers this node starts keep their venvs and staged files here
        env["GRIT_SDK_ROOT"] = str(folder / worker / "sdk")
    return env


def start_spark(folder: Path, workers: int = 2, cores: int = 1, memory_mb: int = 1536) -> Cluster:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1 (separate JVMs), ready."""
    home = spark_home()
    folder.mkdir(parents=True, exist_ok=True)
    port, ui = free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    nodes = [
        _start(
            "spark-master",
            [
                spark_class,
                "org.apache.spark.deploy.master.Master",
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--webui-port", str(ui)),
            ],
            _node_env(folder),
            folder,
        )
    ]
    try:
        for i in range(workers):
            work = folder / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            command = [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1"]
            command += ["--cores", str(cores), "--memory", f"{memory_mb}m", "--work-dir", str(work)]
            command += ["--webui-port", str(free_port()), master_url]
            nodes.append(_start(f"spark-worker-{i}", command, _node_env(folder, f"worker-{i}"), folder))

        def ready() -> bool:
            state = _get_json(f"http://127.0.0.1:{ui}/json/")
            return len([w for w in state.get("workers", []) if w.get("state") == "ALIVE"]) == workers

        _wait_until(ready, nodes, "Spark standalone cluster", 180)
    except BaseException:
        for node in reversed(nodes):
            node.stop()
        raise
    argv = ["--runner", "SparkRunner", "--spark_master_url", master_url]
    return Cluster("spark", nodes, argv, folder)


FLINK_CONFIG = """jobmanager.rpc.address: 127.0.0.1
jobmanager.bind-host: 127.0.0.1
jobmanager.rpc.port: {rpc}
jobmanager.memory.process.size: 1024m
rest.address: 127.0.0.1
rest.bind-address: 127.0.0.1
rest.port: {rest}
taskmanager.host: 127.0.0.1
taskmanager.bind-host: 127.0.0.1
taskmanager.numberOfTaskSlots: {slots}
taskmanager.memory.process.size: {memory_mb}m
parallelism.default: {parallelism}
"""


def start_flink(folder: Path, workers: int = 2, slots: int = 1, memory_mb: int = 1280) -> Cluster:
    """A Flink session cluster on 127.0.0.1: a JobManager and ``workers`` TaskManagers (separate JVMs), ready."""
    home = flink_home()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "conf"
    shutil.copytree(home / "conf", conf, dirs_exist_ok=True)
    rest = free_port()
    (conf / "config.yaml").write_text(
        FLINK_CONFIG.format(
            rpc=free_port(), rest=rest, slots=slots, memory_mb=memory_mb, parallelism=workers * slots
        )
    )
    nodes: list[Node] = []

    def env(worker: str | None = None) -> dict:
        logs = folder / "log"
        logs.mkdir(exist_ok=True)
        return {**_node_env(folder, worker), "FLINK_CONF_DIR": str(conf), "FLINK_LOG_DIR": str(logs)}

    try:
        nodes.append(
            _start(
                "flink-jobmanager", [str(home / "bin" / "jobmanager.sh"), "start-foreground"], env(), folder
            )
        )
        for i in range(workers):
            command = [str(home / "bin" / "taskmanager.sh"), "start-foreground"]
            nodes.append(_start(f"flink-taskmanager-{i}", command, env(f"worker-{i}"), folder))

        def ready() -> bool:
            return len(_get_json(f"http://127.0.0.1:{rest}/taskmanagers")["taskmanagers"]) == workers

        _wait_until(ready, nodes, "Flink session cluster", 180)
    except BaseException:
        for node in reversed(nodes):
            node.stop()
        raise
    argv = ["--runner", "FlinkRunner", "--flink_master", f"127.0.0.1:{rest}"]
    argv += ["--parallelism", str(workers * slots)]
    return Cluster("flink", nodes, argv, folder)


@contextmanager
def running(kind: str, folder: Path, workers: int = 2):
    """A started Spark (``spark``) or Flink (``flink``) cluster for the ``with`` block, stopped after."""
    folder.mkdir(parents=True, exist_ok=True)
    cluster = (start_spark if kind == "spark" else start_flink)(folder, workers)
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Spark/Flink distributions and Beam's boot program in {CACHE_ROOT}"
    )
    parser.add_argument("what", nargs="+", choices=("spark", "flink", "boot"))
    args = parser.parse_args(argv)
    makers = {"spark": spark_home, "flink": flink_home, "boot": boot_program}
    try:
        for name in args.what:
            print(makers[name]())
    except ClusterUnavailableError as err:
        print(f"clusters: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
