"""URLs -> their fsspec file systems, or one line naming the extra that brings the missing one.

gs:// needs gcsfs and s3:// needs s3fs; neither comes with the base install (most builds write
locally). The launcher and the shard tools check every path they are given first, so a missing
file system is one line before anything is read or written, not an ImportError at the lock.
"""

from __future__ import annotations

from collections.abc import Iterable

import fsspec

# protocol -> (the extra that installs its file system, the package)
EXTRAS = {
    "gs": ("gcp", "gcsfs"),
    "gcs": ("gcp", "gcsfs"),
    "s3": ("aws", "s3fs"),
    "s3a": ("aws", "s3fs"),
}


class FileSystemMissingError(ValueError):
    """A path's protocol has no file system installed here; the message says what to install."""


def protocol_of(path: str) -> str:
    return path.split("://", 1)[0].lower() if "://" in path else "file"


def missing_file_system(path: str) -> str | None:
    """Why ``path``'s file system cannot be loaded here (one line naming what to install), or None."""
    protocol = protocol_of(path)
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as err:
        if protocol in EXTRAS:
            extra, package = EXTRAS[protocol]
            return (
                f"{path}: {protocol}:// needs {package}, which is not installed: "
                f"pip install 'grit-pipeline[{extra}]' (on the workers too; see README, object stores)"
            )
        return f"{path}: the file system for {protocol}:// is not installed ({err})".replace("\n", " ")
    except ValueError as err:  # a protocol fsspec does not know at all
        return f"{path}: {err}"
    return None


def check_file_systems(paths: Iterable[str]) -> None:
    """Raise FileSystemMissingError (one line) for the first path whose file system is missing."""
    for path in paths:
        problem = missing_file_system(path)
        if problem is not None:
            raise FileSystemMissingError(problem)
