"""Beam's Spark and Flink job servers: Beam's own jar for the SDK's version, else one assembled here.

``job_server(name)`` first asks Beam for its own shaded job-server jar at the installed SDK's
version (``beam-runners-spark-3-job-server`` / ``beam-runners-flink-1.19-job-server``, Beam's
default, downloaded into ``~/.apache_beam/cache/jars``): the jar Beam builds and tests with this SDK.
Only when that cannot be had does it fall back, in one logged line, to the jar assembled below.

Supported clusters: Spark 3.5 (Scala 2.12; standalone, YARN or Kubernetes masters) and Flink 1.19
(session clusters, ``--flink_master HOST:REST_PORT``), the versions both jars are built for.

The fallback, assembled from Maven Central into a local cache, once:

Beam's Python SparkRunner and FlinkRunner start a Java job server (``java -jar JAR``) that
translates the portable pipeline for Spark (``local[N]``) or a Flink mini-cluster (``[local]``).
Beam would download the shaded ``beam-runners-*-job-server`` jar itself, but Maven Central (as
this project's machines reach it) serves no job-server jar of any version. It does serve the
runner modules they are shaded from (``beam-runners-spark-3``, ``beam-runners-flink-1.19``) with
all their dependencies at Beam 2.62.0, so ``ensure_job_server`` resolves those with Maven into
``~/.cache/grit-pipeline/jars/RUNNER/lib`` and writes a small launcher jar beside them whose
manifest names the main class and the classpath: the same ``java -jar`` interface, no shading.

``python -m grit_pipeline.beam_jobs.job_servers spark flink`` (``make job-servers``) fills the
cache; `grit build --runner SparkRunner|FlinkRunner` fills it on first use and passes the jar on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The newest Beam whose Java runner modules resolve with all their dependencies on Maven Central
# (2.70.0's runner poms are served, but beam-runners-java-job-service 2.70.0, which they need, is not).
BEAM_JAVA_VERSION = "2.62.0"
SPARK_VERSION = "3.5.0"  # the Spark 3 line Beam's own spark-3 job server ships
CACHE_DIR = Path(os.environ.get("GRIT_JAR_CACHE", Path.home() / ".cache" / "grit-pipeline" / "jars"))
# Spark and Flink reflect into these JDK internals; `java -jar` reads Add-Opens from the manifest.
ADD_OPENS = (
    "java.base/java.io java.base/java.lang java.base/java.lang.invoke java.base/java.lang.reflect "
    "java.base/java.net java.base/java.nio java.base/java.util java.base/java.util.concurrent "
    "java.base/sun.nio.ch java.base/sun.nio.cs java.base/sun.security.action java.base/sun.util.calendar"
)


@dataclass(frozen=True)
class JobServer:
    """One runner's job server: Maven coordinates (group:artifact:version) and its main class."""

    name: str
    coordinates: tuple[str, ...]
    main_class: str

    @property
    def jar(self) -> Path:
        return CACHE_DIR / self.name / f"grit-{self.name}-job-server-{BEAM_JAVA_VERSION}.jar"


JOB_SERVERS = {
    "spark": JobServer(
        "spark",
        (
            f"org.apache.beam:beam-runners-spark-3:{BEAM_JAVA_VERSION}",
            # Spark itself is a provided dependency of the runner module: the job server brings it.
            f"org.apache.spark:spark-core_2.12:{SPARK_VERSION}",
            f"org.apache.spark:spark-streaming_2.12:{SPARK_VERSION}",
        ),
        "org.apache.beam.runners.spark.SparkJobServerDriver",
    ),
    "flink": JobServer(
        "flink",
        (f"org.apache.beam:beam-runners-flink-1.19:{BEAM_JAVA_VERSION}",),
        "org.apache.beam.runners.flink.FlinkJobServerDriver",
    ),
}


class JobServerUnavailableError(RuntimeError):
    """Java or Maven is missing, or Maven could not resolve the job server's dependencies."""


def _pom(server: JobServer) -> str:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in (c.split(":") for c in server.coordinates)
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>grit-pipeline</groupId><artifactId>{server.name}-job-server</artifactId>"
        f"<version>{BEAM_JAVA_VERSION}</version><dependencies>{deps}</dependencies></project>"
    )


def _manifest_line(line: str) -> str:
    """A manifest header folded at 72 bytes, continuation lines starting with a space (the jar spec)."""
    parts = [line[:70]]
    parts += [" " + line[i : i + 69] for i in range(70, len(line), 69)]
    return "\r\n".join(parts) + "\r\n"


def _write_launcher_jar(server: JobServer, libs: list[str]) -> None:
    manifest = "".join(
        _manifest_line(h)
        for h in (
            "Manifest-Version: 1.0",
            f"Main-Class: {server.main_class}",
            f"Add-Opens: {ADD_OPENS}",
            "Class-Path: " + " ".join(f"lib/{name}" for name in libs),  # relative to the jar
        )
    )
    tmp = server.jar.with_suffix(".jar.tmp")
    with zipfile.ZipFile(tmp, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest + "\r\n")
    tmp.replace(server.jar)


def _resolve(server: JobServer, folder: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None or shutil.which("java") is None:
        raise JobServerUnavailableError(
            f"the {server.name} job server needs Java 17 and Maven on PATH "
            "(Debian: apt-get install openjdk-17-jdk-headless maven)"
        )
    (folder / "pom.xml").write_text(_pom(server))
    shutil.rmtree(folder / "lib", ignore_errors=True)
    command = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime"]
    done = subprocess.run(
        [*command, "-DoutputDirectory=lib"], cwd=folder, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() if "[ERROR]" in line][:3]
        raise JobServerUnavailableError(
            f"Maven could not resolve {', '.join(server.coordinates)}: {' '.join(errors) or done.stderr[-300:]}"
        )


def ensure_job_server(name: str) -> Path:
    """The launcher jar of runner ``name`` ("spark" or "flink"), resolved into the cache if absent."""
    server = JOB_SERVERS[name]
    if server.jar.exists():
        return server.jar
    folder = server.jar.parent
    folder.mkdir(parents=True, exist_ok=True)
    print(f"fetching the {name} job server ({', '.join(server.coordinates)}) into {folder}", file=sys.stderr)
    _resolve(server, folder)
    _write_launcher_jar(server, sorted(os.listdir(folder / "lib")))
    return server.jar


BEAM_JAR_TARGETS = {
    "spark": ":runners:spark:3:job-server:shadowJar",
    "flink": ":runners:flink:1.19:job-server:shadowJar",
}


def beams_own_jar(name: str) -> Path:
    """Beam's own job-server jar for the installed SDK version (downloaded once); raises when unavailable."""
    from apache_beam.utils.subprocess_server import JavaJarServer

    return Path(JavaJarServer.local_jar(JavaJarServer.path_to_beam_jar(BEAM_JAR_TARGETS[name])))


def job_server(name: str) -> Path:
    """The job server jar to use for ``name``: Beam's own for this SDK, else the assembled fallback."""
    try:
        return beams_own_jar(name)
    except Exception as err:  # not published for this version, or no network: the fallback says so
        from apache_beam.version import __version__

        reason = str(err).splitlines()[0][:160]
        print(
            f"Beam's {name} job server {__version__} is unavailable ({reason}); using the one assembled "
            f"from Beam {BEAM_JAVA_VERSION}'s runner modules (no compatibility promise across versions)",
            file=sys.stderr,
        )
        return ensure_job_server(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fetch Beam's job servers into " + str(CACHE_DIR))
    parser.add_argument("runners", nargs="+", choices=sorted(JOB_SERVERS))
    args = parser.parse_args(argv)
    try:
        for name in args.runners:
            print(job_server(name))
    except JobServerUnavailableError as err:
        print(f"job servers: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
