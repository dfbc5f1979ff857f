"""Detector weights staged once: `grit stage-detector`, one checked copy per machine, provenance.

The tiny random detector stands in for real weights (same files: config, weights, processor); the
staged folders live on fsspec's in-memory file system and on file:// URLs (object-store emulators
are exercised elsewhere; any fsspec URL goes through the same calls).
"""

from __future__ import annotations

import threading

import fsspec
import pytest

from grit_pipeline.cli import main
from grit_pipeline.grounding import DetectorConfig, load_detector, staging
from grit_pipeline.grounding.config import DetectorUnavailableError
from grit_pipeline.grounding.tiny import cached_tiny_detector


@pytest.fixture
def staged(tmp_path):
    url = f"file://{tmp_path}/bucket/tiny"
    assert main(["stage-detector", str(cached_tiny_detector()), url]) == 0
    return url


def test_a_staged_folder_is_copied_once_per_machine_and_checked(staged, tmp_path, monkeypatch):
    downloads = []
    original = staging._download
    monkeypatch.setattr(staging, "_download", lambda *a: (downloads.append(1), original(*a))[1])
    cache, copies = tmp_path / "cache", []
    workers = [
        threading.Thread(target=lambda: copies.append(staging.local_copy(staged, cache))) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(downloads) == 1  # the others waited on the lock and found the copy done
    assert len({c.path for c in copies}) == 1 and (copies[0].path / "config.json").is_file()
    assert staging.verify_folder(str(copies[0].path)).checksum == copies[0].checksum


def test_a_damaged_staged_file_is_an_error_not_a_model(staged, tmp_path):
    fs, root = fsspec.core.url_to_fs(staged)
    weights = next(p for p in fs.ls(root, detail=False) if p.endswith((".safetensors", ".bin")))
    with fs.open(weights, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DetectorUnavailableError, match=r"sha256 .* restage"):
        staging.local_copy(staged, tmp_path / "cache")


def test_a_folder_without_checksums_is_refused_with_how_to_stage_it(tmp_path):
    with pytest.raises(DetectorUnavailableError, match="grit stage-detector"):
        staging.local_copy(f"memory://{tmp_path.name}/empty", tmp_path / "cache")


def test_the_detector_loads_from_a_staged_url_and_records_its_checksum(tmp_path, monkeypatch):
    url = f"memory://{tmp_path.name}/tiny"
    record = staging.stage_detector(str(cached_tiny_detector()), url)
    monkeypatch.setattr(staging, "CACHE", tmp_path / "cache")
    detector = load_detector(DetectorConfig(model=url))
    provenance = detector.provenance()
    assert provenance["detector"] == url
    assert provenance["detector_checksum"] == record["checksum"]
    assert staging.staged_provenance(url)["detector_checksum"] == record["checksum"]


def test_stage_detector_refuses_a_revision_for_a_local_folder(tmp_path, capsys):
    assert (
        main(["stage-detector", str(cached_tiny_detector()), f"file://{tmp_path}/x", "--revision", "v1"]) == 2
    )
    assert "--revision is for hub models" in capsys.readouterr().err
