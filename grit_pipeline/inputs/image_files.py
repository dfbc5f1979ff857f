"""``--image-path-column``: local image files read in place of downloads, never a side door to the web.

The column holds paths, relative to the image root (``--image-root``, by default the folder of
the table that names them). A value that is a URL (any ``scheme:``), or a path that leaves the
root, is refused with ``bad_image_path``: downloads go through the fetch stage and its address
guard, timeouts and size limits only. On the local file system the path is resolved (symlinks
followed, ``realpath``) before the root check, so a link inside the root to a file or folder
outside it is refused too; the file actually opened is checked again through its descriptor, so
a link swapped in between cannot slip past. The root itself is the user's choice and may be any
fsspec path (a bucket beside a remote table; buckets have no links).

The read stage only locates the file (``locate_image_file``: resolved, checked, a regular file);
its bytes are read in the fetch stage's thread pool (``ImageFile.read``), so rows carry a path
through the shuffles, files naming the same file are deduplicated before any is read, and each
read is capped by ``--max-bytes``: the size is taken before the read and no more than the cap
(plus one byte, to see a file that grew) is ever read.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass

import fsspec

from grit_pipeline.fetch.results import FetchError
from grit_pipeline.inputs.config import BAD_IMAGE_PATH, MISSING_IMAGE_FILE

# "http:", "file:", "s3:", "data:", "simplecache::..." : whatever fsspec or urllib could open remotely.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def image_root(table_path: str, root: str | None) -> str:
    """The folder relative image paths resolve against."""
    if root is not None:
        return root.rstrip("/") or "/"
    return table_path.rsplit("/", 1)[0] if "/" in table_path else "."


def resolve_image_path(value: object, root: str) -> tuple[str | None, str | None]:
    """(path to open, None) or (None, why it is refused) for one cell of the image path column.

    >>> resolve_image_path("img/a.jpg", "/data")
    ('/data/img/a.jpg', None)
    >>> resolve_image_path("http://127.0.0.1/a.jpg", "/data")[1]
    "'http://127.0.0.1/a.jpg' is a URL; --image-path-column takes local paths (put URLs in --url-column)"
    >>> resolve_image_path("../etc/passwd", "/data")[1]
    "'../etc/passwd' leaves the image root /data"
    """
    if not isinstance(value, str) or not value.strip():
        return None, f"no image path (got {value!r})"
    if _SCHEME.match(value) or "::" in value:
        return None, f"{value!r} is a URL; --image-path-column takes local paths (put URLs in --url-column)"
    _, root_path = fsspec.core.url_to_fs(root)
    base = posixpath.normpath(root_path if root_path.startswith("/") else f"/{root_path}")
    joined = posixpath.normpath(posixpath.join(base, value))
    if joined != base and not joined.startswith(base.rstrip("/") + "/"):
        return None, f"{value!r} leaves the image root {root}"
    relative = posixpath.relpath(joined, base)
    return (root.rstrip("/") + "/" + relative if relative != "." else root), None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


@dataclass(frozen=True)
class ImageFile:
    """A located image file: its path (resolved on the local file system) and the root it must stay in."""

    path: str
    root: str

    def read(self, max_bytes: int) -> bytes:
        """The file's bytes; FetchError ``file_too_large`` (over ``max_bytes``, from its size, before
        reading), ``bad_image_path`` (the file opened lies outside the root) or ``missing_image_file``."""
        fs, fs_path = fsspec.core.url_to_fs(self.path)
        try:
            if _is_local(fs):
                return self._read_local(fs_path, max_bytes)
            if fs.size(fs_path) > max_bytes:
                raise FetchError("file_too_large", f"{self.path} is over --max-bytes {max_bytes}")
            with fs.open(fs_path, "rb") as handle:
                return _capped(handle.read(max_bytes + 1), self.path, max_bytes)
        except OSError as err:
            raise FetchError(MISSING_IMAGE_FILE, f"cannot read {self.path}: {err}") from err

    def _read_local(self, path: str, max_bytes: int) -> bytes:
        # O_NONBLOCK: a FIFO swapped in after the read stage's check opens without waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            opened = os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else path
            if not _inside(opened, self.root):  # a link swapped in since the read stage looked
                raise FetchError(BAD_IMAGE_PATH, f"{self.path} now resolves to {opened}, outside {self.root}")
            info = os.fstat(fd)
            if not _regular(info.st_mode):
                raise FetchError(MISSING_IMAGE_FILE, f"{self.path} is not a regular file")
            if info.st_size > max_bytes:
                raise FetchError(
                    "file_too_large", f"{self.path} is {info.st_size} bytes, over --max-bytes {max_bytes}"
                )
            return _capped(handle.read(max_bytes + 1), self.path, max_bytes)


def _regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _capped(data: bytes, path: str, max_bytes: int) -> bytes:
    if len(data) > max_bytes:  # the file grew after its size was taken
        raise FetchError("file_too_large", f"{path} is over --max-bytes {max_bytes}")
    return data


def _resolved_local(path: str, root: str) -> tuple[str | None, str | None]:
    """(real path, None) or (None, why refused): links followed before the root check."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if not _inside(real, real_root):
        return None, f"{path} resolves to {real}, outside the image root {real_root}"
    return real, None


def locate_image_file(value: object, root: str) -> tuple[ImageFile | None, tuple[str, str] | None]:
    """(ImageFile, None) or (None, (reason, error)) for one cell of the image path column: the path
    resolved and checked against the root, and a regular file there. Nothing is read."""
    path, refused = resolve_image_path(value, root)
    if refused:
        return None, (BAD_IMAGE_PATH, refused)
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        if _is_local(fs):
            real, refused = _resolved_local(fs_path, fsspec.core.url_to_fs(root)[1])
            if refused:
                return None, (BAD_IMAGE_PATH, refused)
            if not os.path.isfile(real):  # a folder, a device such as /dev/zero, or nothing at all
                return None, (MISSING_IMAGE_FILE, f"{path} is not a file")
            return ImageFile(real, os.path.realpath(fsspec.core.url_to_fs(root)[1])), None
        if not fs.isfile(fs_path):
            return None, (MISSING_IMAGE_FILE, f"{path} is not a file")
        return ImageFile(path, root), None
    except OSError as err:
        return None, (MISSING_IMAGE_FILE, f"cannot read {path}: {err}")
