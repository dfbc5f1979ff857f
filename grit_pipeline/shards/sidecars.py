"""What a build leaves beside its shards: the rejects table and the run manifest, and shard provenance.

The Beam job writes ``OUT/shards/*.parquet``, ``OUT/rejects/*.parquet`` and ``OUT/manifest.json``;
given the shards (a file, ``OUT/shards``, ``OUT`` or a glob) we look in each shard's folder and its
parent for ``rejects/`` and ``manifest.json``; a manifest's committed index names the rejects files.
"""

from __future__ import annotations

import json
from collections import Counter

import fsspec

from grit_pipeline.schemas import read_provenance
from grit_pipeline.schemas.committed import committed_files
from grit_pipeline.schemas.reader import read_parquet


def _parent(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[0] if "/" in url.rstrip("/") else "."


def _candidate_dirs(files: list[str]) -> list[str]:
    dirs: list[str] = []
    for shard_dir in dict.fromkeys(_parent(f) for f in files):
        for folder in (shard_dir, _parent(shard_dir)):
            if folder not in dirs:
                dirs.append(folder)
    return dirs


def find_sidecars(files: list[str]) -> tuple[list[str], list[str]]:
    """``(rejects Parquet files, manifest.json files)`` beside the given shards."""
    rejects, manifests = [], []
    for folder in _candidate_dirs(files):
        fs, path = fsspec.core.url_to_fs(folder)
        protocol = "://" in folder
        rejects_dir = f"{path}/rejects"
        committed = committed_files(fs, path, "rejects")
        if committed is not None:  # a build's output: its committed rejects, never a listing
            rejects += [fs.unstrip_protocol(p) if protocol else p for p in committed]
        elif fs.isdir(rejects_dir):
            found = sorted(
                p
                for p in fs.find(rejects_dir)
                if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(".")
            )
            rejects += [fs.unstrip_protocol(p) if protocol else p for p in found]
        manifest = f"{path}/manifest.json"
        if fs.isfile(manifest):
            manifests.append(fs.unstrip_protocol(manifest) if protocol else manifest)
    return list(dict.fromkeys(rejects)), list(dict.fromkeys(manifests))


def rejects_summary(reject_files: list[str]) -> dict:
    """Rejected rows counted by stage and by (stage, reason)."""
    by_stage: Counter[str] = Counter()
    by_reason: Counter[tuple[str, str]] = Counter()
    for path in reject_files:
        table = read_parquet(path, columns=["stage", "reason"])
        for stage, reason in zip(table["stage"].to_pylist(), table["reason"].to_pylist()):
            by_stage[stage] += 1
            by_reason[(stage, reason)] += 1
    return {
        "files": len(reject_files),
        "rows": sum(by_stage.values()),
        "by_stage": dict(by_stage.most_common()),
        "by_reason": [
            {"stage": stage, "reason": reason, "rows": n} for (stage, reason), n in by_reason.most_common()
        ],
    }


def read_manifests(manifest_files: list[str]) -> list[dict]:
    """Each manifest's JSON with its path; a manifest that does not parse is reported, not skipped."""
    out = []
    for path in manifest_files:
        with fsspec.open(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
        try:
            out.append({"path": path, "manifest": json.loads(text)})
        except json.JSONDecodeError as err:
            out.append({"path": path, "error": f"not valid JSON: {err}"})
    return out


def provenance_groups(files: list[str]) -> list[dict]:
    """Distinct provenance records and how many shards carry each (None for GRIT-20M files)."""
    groups: dict[str, dict] = {}
    for path in files:
        provenance = read_provenance(path)
        key = json.dumps(provenance, sort_keys=True)
        group = groups.setdefault(key, {"provenance": provenance, "shards": 0})
        group["shards"] += 1
    return list(groups.values())
