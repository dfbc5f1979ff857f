"""``--image-path-column``: local image files read in place of downloads, never a side door to the web.

The column holds paths, relative to the image root (``--image-root``, by default the folder of
the table that names them). A value that is a URL (any ``scheme:``), or a path that leaves the
root, is refused with ``bad_image_path``: downloads go through the fetch stage and its address
guard, timeouts and size limits only. The root itself is the user's choice and may be any fsspec
path (a bucket beside a remote table).
"""

from __future__ import annotations

import posixpath
import re

import fsspec

from grit_pipeline.inputs.config import BAD_IMAGE_PATH, MISSING_IMAGE_FILE

# "http:", "file:", "s3:", "data:", "simplecache::..." : whatever fsspec or urllib could open remotely.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
MAX_IMAGE_FILE_BYTES = (
    256 * 2**20
)  # a bound on what one row reads into memory; fetch's --max-bytes applies after


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


def read_image_file(value: object, root: str) -> tuple[bytes | None, tuple[str, str] | None]:
    """(bytes, None) or (None, (reason, error)) for one cell of the image path column."""
    path, refused = resolve_image_path(value, root)
    if refused:
        return None, (BAD_IMAGE_PATH, refused)
    fs, fs_path = fsspec.core.url_to_fs(path)
    try:
        if not fs.isfile(fs_path):  # a folder, a device such as /dev/zero, or nothing at all
            return None, (MISSING_IMAGE_FILE, f"{path} is not a file")
        if fs.size(fs_path) > MAX_IMAGE_FILE_BYTES:
            return None, (BAD_IMAGE_PATH, f"{path} is over {MAX_IMAGE_FILE_BYTES} bytes")
        with fs.open(fs_path, "rb") as handle:
            return handle.read(), None
    except OSError as err:
        return None, (MISSING_IMAGE_FILE, f"cannot read {path}: {err}")
