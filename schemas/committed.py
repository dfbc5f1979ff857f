"""What a build committed: the file index its ``manifest.json`` keeps, read by every reader.

A build writes ``OUTPUT/manifest.json`` last, at its commit; its ``files`` entry lists, relative
to OUTPUT, every shard and rejects file that is committed now. Readers take their file list from
it, never from a listing of the folder: on object stores workers write final names in place, so
a bundle that failed and was retried leaves its first attempt's files beside the committed ones
(the commit deletes them, but a reader listing the folder before that, or after a crash between
the two, would read those rows twice). Folders without a manifest (GRIT-20M downloads, shards
copied by hand) and manifests older than the index are listed as before.
"""

from __future__ import annotations

import json

MANIFEST = "manifest.json"
FILES_KEY = "files"  # {"shards": [names relative to OUTPUT], "rejects": [...]}
KINDS = ("shards", "rejects")


def read_manifest(fs, folder: str) -> dict | None:
    """``folder/manifest.json`` as JSON, or None when there is none (or it does not parse)."""
    try:
        with fs.open(f"{folder.rstrip('/')}/{MANIFEST}", "rb") as handle:
            return json.loads(handle.read())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _parent(fs_path: str) -> str:
    stripped = fs_path.rstrip("/")
    return stripped.rsplit("/", 1)[0] if "/" in stripped else ""


def build_root(fs, folder: str) -> tuple[str, dict] | None:
    """(OUTPUT, its manifest) when ``folder`` is a build's output or one of its ``shards``/``rejects``
    folders and the manifest carries the committed index; None otherwise."""
    folder = folder.rstrip("/")
    candidates = [folder]
    if folder.rsplit("/", 1)[-1] in KINDS:
        candidates.append(_parent(folder))
    for root in candidates:
        manifest = read_manifest(fs, root) if root else None
        if manifest is not None and isinstance(manifest.get(FILES_KEY), dict):
            return root, manifest
    return None


def committed_files(fs, folder: str, kind: str) -> list[str] | None:
    """The committed ``kind`` files (fs paths, sorted) of the build ``folder`` belongs to, or None
    when ``folder`` is not in a build with a committed index (the caller then lists the folder)."""
    found = build_root(fs, folder)
    if found is None:
        return None
    root, manifest = found
    return sorted(f"{root}/{name}" for name in manifest[FILES_KEY].get(kind, []))
