"""Small files changed only if nobody else changed them: exclusive create, replace and delete on a version.

The lock (``lock``) needs three operations that no plain fsspec call gives on an object store:
create a file only if it does not exist, and replace or delete it only if it is still the version
we wrote. Each store has its own way:

- gs://: the JSON API's preconditions, ``ifGenerationMatch=0`` on create and the generation we
  wrote on replace and delete (a 412 answer when they do not hold).
- s3://: conditional writes, ``If-None-Match: *`` on create and ``If-Match: ETAG`` on replace and
  delete (S3 since 2024; MinIO and moto's server too).
- the local file system: ``O_EXCL`` on create; replace and delete under an ``flock`` of the
  folder, after comparing the content's digest.
- any other file system (memory://, hdfs://...): write, read back and compare; compare before
  replacing or deleting. This narrows the window between two launchers but does not close it.

A version is an opaque string (generation, ETag, digest); ``Versioned`` pairs it with the bytes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

GCS_PROTOCOLS = frozenset({"gs", "gcs"})
S3_PROTOCOLS = frozenset({"s3", "s3a"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})


class PreconditionFailed(RuntimeError):
    """The file is not the version we hold: someone else replaced or deleted it."""


@dataclass(frozen=True)
class Versioned:
    data: bytes
    version: str


def _protocols(fs) -> set[str]:
    return set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def store_kind(fs) -> str:
    """ "gcs", "s3", "local" or "other": which of the module's ways this file system takes."""
    protocols = _protocols(fs)
    for kind, names in (("gcs", GCS_PROTOCOLS), ("s3", S3_PROTOCOLS), ("local", LOCAL_PROTOCOLS)):
        if protocols & names:
            return kind
    return "other"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- gs:// ---------------------------------------------------------------------------------------


def _gcs_split(fs, path: str) -> tuple[str, str]:
    bucket, key, _ = fs.split_path(path)
    return bucket, key


def _gcs_upload(fs, path: str, data: bytes, generation: str) -> str:
    """One multipart upload with ``ifGenerationMatch`` (0: must not exist); returns the new generation."""
    bucket, key = _gcs_split(fs, path)
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\nContent-Type: application/json; charset=UTF-8\n\n{json.dumps({'name': key})}\n"
    body = (
        f"{head}--{boundary}\nContent-Type: application/octet-stream\n\n".encode()
        + data
        + f"\n--{boundary}--".encode()
    )
    try:
        out = fs.call(
            "POST",
            f"{fs._location}/upload/storage/v1/b/{bucket}/o",
            uploadType="multipart",
            ifGenerationMatch=generation,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            data=body,
            json_out=True,
        )
    except FileExistsError as err:  # gcsfs raises it for 412 Precondition Failed
        raise PreconditionFailed(f"{path}: generation {generation} does not hold") from err
    fs.invalidate_cache(path)
    return str(out["generation"])


def _gcs_read(fs, path: str) -> Versioned | None:
    bucket, key = _gcs_split(fs, path)
    try:
        headers, data = fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
    except FileNotFoundError:
        return None
    generation = {k.lower(): v for k, v in headers.items()}.get("x-goog-generation")
    if generation is None:  # an emulator that does not send it: ask for the object's metadata
        generation = fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True)["generation"]
    return Versioned(bytes(data), str(generation))


def _gcs_delete(fs, path: str, generation: str) -> None:
    bucket, key = _gcs_split(fs, path)
    try:
        fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=generation)
    except FileExistsError as err:
        raise PreconditionFailed(f"{path}: generation {generation} does not hold") from err
    except FileNotFoundError as err:
        raise PreconditionFailed(f"{path}: already gone") from err
    fs.invalidate_cache(path)


# --- s3:// ---------------------------------------------------------------------------------------


def _s3_failed(err: Exception) -> bool:
    """Whether an s3fs error is a failed condition (412, or 409 for a concurrent conditional write)."""
    cause = err.__cause__ or err
    code = getattr(cause, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or (
        "pre-condition" in str(err).lower()
    )


def _s3_call(fs, method: str, path: str, **kwargs):
    bucket, key, _ = fs.split_path(path)
    try:
        out = fs.call_s3(method, Bucket=bucket, Key=key, **kwargs)
    except OSError as err:
        if _s3_failed(err):
            raise PreconditionFailed(f"{path}: {kwargs.keys() - {'Body'}} does not hold") from err
        raise
    fs.invalidate_cache(path)
    return out


def _s3_read(fs, path: str) -> Versioned | None:
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)

    async def get():
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with response["Body"] as body:
            return await body.read(), response["ETag"]

    try:
        data, etag = sync(fs.loop, get)
    except FileNotFoundError:
        return None
    return Versioned(data, etag)


# --- the local file system -----------------------------------------------------------------------


@contextmanager
def _folder_locked(path: str):
    """An exclusive ``flock`` of the file's folder: compare-and-replace is one step for other launchers."""
    handle = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the flock


def _local_read(path: str) -> Versioned | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    return Versioned(data, _digest(data))


def _local_create(path: str, data: bytes) -> str:
    with _folder_locked(path), open(path, "xb") as handle:
        handle.write(data)
    return _digest(data)


def _local_replace(path: str, data: bytes, version: str | None) -> str:
    with _folder_locked(path):
        current = _local_read(path)
        if current is None or current.version != version:
            raise PreconditionFailed(f"{path} changed since version {version}")
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    return _digest(data)


def _local_delete(path: str, version: str) -> None:
    with _folder_locked(path):
        current = _local_read(path)
        if current is None or current.version != version:
            raise PreconditionFailed(f"{path} changed since version {version}")
        os.remove(path)


# --- the operations ------------------------------------------------------------------------------


def read(fs, path: str) -> Versioned | None:
    """The file's bytes and their version, or None when it does not exist."""
    kind = store_kind(fs)
    if kind == "gcs":
        return _gcs_read(fs, path)
    if kind == "s3":
        return _s3_read(fs, path)
    if kind == "local":
        return _local_read(path)
    try:
        fs.invalidate_cache(path)
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    return Versioned(data, _digest(data))


def create(fs, path: str, data: bytes) -> str:
    """Create ``path`` holding ``data`` unless it exists (FileExistsError); returns its version."""
    kind = store_kind(fs)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    try:
        if kind == "gcs":
            return _gcs_upload(fs, path, data, "0")
        if kind == "s3":
            return str(_s3_call(fs, "put_object", path, Body=data, IfNoneMatch="*")["ETag"])
    except PreconditionFailed as err:
        raise FileExistsError(path) from err
    if kind == "local":
        return _local_create(path, data)
    if fs.exists(path):
        raise FileExistsError(path)
    fs.pipe_file(path, data)
    current = read(fs, path)
    if current is None or current.data != data:  # another launcher wrote after us
        raise FileExistsError(path)
    return current.version


def replace(fs, path: str, data: bytes, version: str) -> str:
    """Replace ``path`` by ``data`` if it is still ``version`` (else PreconditionFailed); the new version."""
    kind = store_kind(fs)
    if kind == "gcs":
        return _gcs_upload(fs, path, data, version)
    if kind == "s3":
        return str(_s3_call(fs, "put_object", path, Body=data, IfMatch=version)["ETag"])
    if kind == "local":
        return _local_replace(path, data, version)
    current = read(fs, path)
    if current is None or current.version != version:
        raise PreconditionFailed(f"{path} changed since version {version}")
    fs.pipe_file(path, data)
    return _digest(data)


def delete(fs, path: str, version: str) -> None:
    """Delete ``path`` if it is still ``version`` (else PreconditionFailed)."""
    kind = store_kind(fs)
    if kind == "gcs":
        _gcs_delete(fs, path, version)
    elif kind == "s3":
        _s3_call(fs, "delete_object", path, IfMatch=version)
    elif kind == "local":
        _local_delete(path, version)
    else:
        current = read(fs, path)
        if current is None or current.version != version:
            raise PreconditionFailed(f"{path} changed since version {version}")
        fs.rm(path)
