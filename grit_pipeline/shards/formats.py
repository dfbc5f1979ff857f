"""Row converters for `grit convert`: the Kosmos-2 TSV line, a webdataset sample, a JSON line.

Each converter is a pure function of one shard row (v1 layout) returning what is written, or raising
``Skip`` with a reason when the row cannot be carried by that format (e.g. no image bytes), or
``checks.ImageProblem`` when its image is broken or over the pixel limit (a problem of the shard).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

from grit_pipeline.shards.checks import MAX_PIXELS, image_header, open_image
from grit_pipeline.shards.common import json_safe, row_without_image

_IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_-]")
# Characters that would split a TSV line: replaced by a space, one for one, so span offsets still hold.
_TSV_BREAKERS = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


class Skip(Exception):
    """A row the target format cannot carry; the message is the reason, counted in the summary."""


def _image(row: dict) -> bytes:
    if row.get("image") is None:
        raise Skip("no_image")
    return row["image"]


def image_format(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """PIL's name of the encoded format (``JPEG``, ``PNG``...), read from the header alone."""
    with image_header(data, max_pixels) as image:
        return image.format or "UNKNOWN"


def as_jpeg(data: bytes, max_pixels: int = MAX_PIXELS) -> bytes:
    """The image as JPEG bytes: JPEG input unchanged, anything else re-encoded (RGB, quality 95)."""
    if image_format(data, max_pixels) == "JPEG":
        return data
    with open_image(data, max_pixels) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def kosmos2_tsv_line(row: dict, max_pixels: int = MAX_PIXELS) -> str:
    """``md5, caption, base64 JPEG, width, height, {'phrase': noun_chunks, 'expression_v1': ref_exps}``.

    The layout of the Kosmos-2 repository's ``prepare_grit.py`` (docs/grit.md section 2): tab-separated,
    the last column the Python literal its loader reads back with ``ast.literal_eval``; the md5 is of
    the JPEG bytes written. ``width``/``height`` are the original size the boxes are normalised by.
    """
    jpeg = as_jpeg(_image(row), max_pixels)
    width, height = row.get("width"), row.get("height")
    if width is None or height is None:
        with image_header(jpeg, max_pixels) as image:
            width, height = image.size
    combined = {"phrase": row.get("noun_chunks") or [], "expression_v1": row.get("ref_exps") or []}
    fields = [
        hashlib.md5(jpeg).hexdigest(),
        row["caption"].translate(_TSV_BREAKERS),
        base64.b64encode(jpeg).decode("ascii"),
        int(width),
        int(height),
        combined,
    ]
    return "\t".join(map(str, fields))


def sample_key(key: str) -> str:
    """A webdataset ``__key__`` for a row key: no dots or slashes (they split names); unique when changed."""
    safe = _UNSAFE_KEY.sub("_", key)
    return safe if safe == key else f"{safe}_{hashlib.md5(key.encode()).hexdigest()[:8]}"


def webdataset_sample(row: dict, max_pixels: int = MAX_PIXELS) -> dict:
    """``{"__key__", <image extension>: bytes, "json": row without image}``."""
    data = _image(row)
    extension = _IMAGE_EXTENSIONS.get(image_format(data, max_pixels))
    if extension is None:
        raise Skip("unsupported_image_format")
    return {"__key__": sample_key(row["key"]), extension: data, "json": row_without_image(row)}


def jsonl_line(row: dict, include_images: bool = False) -> str:
    """The row as one JSON line; the image as base64 text with ``include_images``, else only its size."""
    record = json_safe(row) if include_images else row_without_image(row)
    return json.dumps(record, ensure_ascii=False)
