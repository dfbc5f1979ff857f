"""What the fetch stage hands on: a ``FetchedImage`` or a ``FetchFailure`` (raised as ``FetchError``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FetchedImage:
    """A decoded, resized image: encoded bytes plus original size and the hash of what was downloaded.

    Every size is in the displayed frame (EXIF orientation applied), as the pixels of ``image`` are:
    boxes normalised by ``width`` and ``height`` hold for the stored image and for ``open_rgb(source)``.
    """

    image: bytes  # 8-bit RGB (or grey JPEG kept as downloaded), no EXIF rotation
    width: int  # original size
    height: int
    image_width: int  # size of ``image``
    image_height: int
    sha256: str
    # The bytes as downloaded (or read), for stages that need more than the stored copy, e.g. the
    # detector at its own input size. Not stored in shards; the same object as ``image`` when kept as is.
    source: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class FetchFailure:
    """Why an image could not be used: a reject reason, the error text, and whether a retry may help."""

    reason: str
    error: str
    transient: bool = False


class FetchError(Exception):
    """Raised inside the fetch stage; turned into a ``FetchFailure``."""

    def __init__(self, reason: str, error: str, transient: bool = False):
        super().__init__(error)
        self.failure = FetchFailure(reason, error, transient)
