"""Detector weights staged once: a saved model folder at any fsspec URL, copied to each machine once.

``stage_detector(source, dest)`` copies a hub model (at a revision) or a local folder to ``dest``
(gs://, s3://, hdfs://, file://, memory:// ...) and writes ``grit-checksums.json`` there last: the
sha256 of every file, the source and its revision. ``--detector URL`` then makes every worker
process call ``local_copy(URL)``: the first process of a machine downloads the folder into
``~/.cache/grit-pipeline/detectors/CHECKSUM`` under an exclusive file lock, checking every file
against the checksums; the others wait on the lock and find it done. 1,000 workers cost one read
of the bucket per machine, not 1,000 hub downloads, and a damaged copy is an error, not a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import fsspec

from grit_pipeline.grounding.config import DetectorUnavailableError

CHECKSUMS = "grit-checksums.json"
CACHE = Path(os.environ.get("GRIT_DETECTOR_CACHE", Path.home() / ".cache" / "grit-pipeline" / "detectors"))
CHUNK_BYTES = 1 << 22


@dataclass(frozen=True)
class StagedDetector:
    """A staged folder as copied to this machine: where, and what its checksums file says."""

    path: Path
    checksum: str  # sha256 over the sorted (file, sha256) pairs: one value for the whole folder
    source: str
    revision: str | None

    def provenance(self) -> dict:
        return {
            "detector_checksum": self.checksum,
            "detector_source": self.source,
            "detector_revision": self.revision,
        }


def is_staged_url(model: str) -> bool:
    """Whether ``--detector`` names a folder URL (``PROTOCOL://...``) rather than a hub id or a path."""
    return "://" in model


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
        digest.update(block)
    return digest.hexdigest()


def folder_checksum(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()


def _local_files(folder: Path) -> dict[str, str]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        with open(path, "rb") as handle:
            files[path.relative_to(folder).as_posix()] = _sha256(handle)
    return files


def _hub_snapshot(model: str, revision: str | None) -> tuple[Path, str | None]:
    """A hub model's files at ``revision`` (a branch, tag or commit) and the commit they are."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(model, revision=revision))
    return path, path.name  # the snapshot folder is named by its commit hash


def stage_detector(source: str, dest: str, revision: str | None = None) -> dict:
    """Copy a local folder, or the hub model ``source`` at ``revision``, to the URL ``dest``; returns the checksums record."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        if revision:
            raise ValueError("--revision is for hub models; a local folder is staged as it is")
        resolved = None
    else:
        folder, resolved = _hub_snapshot(source, revision)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{source}: no config.json; expected a folder written by save_pretrained")
    files = _local_files(folder)
    fs, root = fsspec.core.url_to_fs(dest)
    fs.makedirs(root, exist_ok=True)
    for name in files:
        fs.put_file(str(folder / name), f"{root}/{name}")
    record = {"source": source, "revision": resolved, "files": files, "checksum": folder_checksum(files)}
    with fs.open(f"{root}/{CHECKSUMS}", "w") as handle:  # last: a folder without it is not staged
        json.dump(record, handle, indent=2, sort_keys=True)
    return record


def _read_record(fs, root: str, url: str) -> dict:
    try:
        with fs.open(f"{root}/{CHECKSUMS}", "r") as handle:
            record = json.load(handle)
    except FileNotFoundError as err:
        raise DetectorUnavailableError(
            f"{url} holds no {CHECKSUMS}: stage the detector there with `grit stage-detector SOURCE {url}`"
        ) from err
    if folder_checksum(record["files"]) != record["checksum"]:
        raise DetectorUnavailableError(f"{url}/{CHECKSUMS} does not match its own file list: restage it")
    return record


def _download(fs, root: str, record: dict, tmp: Path, url: str) -> None:
    for name, expected in record["files"].items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{root}/{name}", str(target))
        with open(target, "rb") as handle:
            got = _sha256(handle)
        if got != expected:
            raise DetectorUnavailableError(
                f"{url}/{name}: sha256 {got[:12]}... but {CHECKSUMS} says {expected[:12]}...: restage the detector"
            )


def staged_provenance(url: str) -> dict:
    """The checksum, source and revision of the staged folder at ``url`` (its checksums file only)."""
    fs, root = fsspec.core.url_to_fs(url)
    record = _read_record(fs, root.rstrip("/"), url)
    return StagedDetector(
        Path(root), record["checksum"], record["source"], record.get("revision")
    ).provenance()


def local_copy(url: str, cache: Path | None = None) -> StagedDetector:
    """The folder at ``url`` on this machine's disk: downloaded and checked once per machine (file lock)."""
    cache = cache or CACHE
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    record = _read_record(fs, root, url)
    cache.mkdir(parents=True, exist_ok=True)
    name = record["checksum"][:32]
    target = cache / name
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, also when this process dies
        if not (target / CHECKSUMS).is_file():
            tmp = cache / f"{name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            try:
                _download(fs, root, record, tmp, url)
                (tmp / CHECKSUMS).write_text(json.dumps(record, indent=2, sort_keys=True))
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return StagedDetector(target, record["checksum"], record["source"], record.get("revision"))


def verify_folder(folder: str) -> StagedDetector:
    """Check a local staged folder (a baked-in image copy) against its checksums file."""
    path = Path(folder)
    try:
        record = json.loads((path / CHECKSUMS).read_text())
    except FileNotFoundError as err:
        raise DetectorUnavailableError(
            f"{folder} holds no {CHECKSUMS} (stage it with `grit stage-detector`)"
        ) from err
    files = _local_files(path)
    if files != record["files"]:
        bad = sorted(set(files.items()) ^ set(record["files"].items()))[:3]
        raise DetectorUnavailableError(f"{folder} does not match its {CHECKSUMS}: {bad}")
    return StagedDetector(path, record["checksum"], record["source"], record.get("revision"))
