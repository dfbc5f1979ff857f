"""One input record (a dict, as a reader decoded it) -> an ``InputRow``, or a rejected one saying why.

Each decision is one function: the key, the text columns, the pass-through values, and where the
image comes from (a URL, a local file, img2dataset's bytes put back into the original frame). A
row with a problem keeps its values as text, so its reject can always be written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grit_pipeline.inputs.config import (
    BAD_INPUT_ROW,
    MISSING_URL,
    NO_IMAGE_IN_SOURCE,
    SHARD_PASSTHROUGH,
    UNKNOWN_RESIZE_GEOMETRY,
    InputConfig,
    InputRow,
)
from grit_pipeline.inputs.frames import restore_frame
from grit_pipeline.inputs.image_files import image_root, locate_image_file
from grit_pipeline.schemas.rejects import UNEXPECTED_ERROR, as_text, error_text
from grit_pipeline.schemas.shard import image_column

Problem = tuple[str, str]  # (reason, error)


@dataclass(frozen=True)
class Where:
    """Where a record was read: its file, format, position and the prefix of generated keys."""

    path: str
    fmt: str  # "table" or "img2dataset"
    index: int  # row number in the file, from 0
    line: int  # line (text formats) or row number (Parquet, tar), from 1, for error messages
    key_prefix: str
    typed: bool  # Parquet values keep their types; text formats give strings


def _bad(where: Where, error: str) -> Problem:
    return BAD_INPUT_ROW, f"{where.path} line {where.line}: {error}"


def _text_problem(record: dict, where: Where, config: InputConfig) -> Problem | None:
    """Undecodable bytes (lone surrogates) or over-long text anywhere in the record."""
    for name, value in record.items():
        if not isinstance(value, str):
            continue
        if len(value) > config.max_field_chars:
            return _bad(
                where, f"column {name!r} holds {len(value):,} characters, over {config.max_field_chars:,}"
            )
        try:
            value.encode("utf-8")  # lone surrogates: bytes the reader could not decode
        except UnicodeEncodeError:
            return _bad(where, f"column {name!r} holds bytes that are not UTF-8: {as_text(value)[:80]!r}")
    return None


def _type_problem(record: dict, where: Where, config: InputConfig, fmt: str) -> Problem | None:
    """The url and caption columns hold text (or nothing), never numbers or lists."""
    columns = [config.url_column, config.caption_column if config.caption_column in record else "txt"]
    for name in columns if fmt != "img2dataset" else columns[1:]:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            return _bad(
                where, f"column {name!r} should hold text, got {type(value).__name__} {as_text(value)[:80]}"
            )
    return None


def _key(record: dict, where: Where, config: InputConfig) -> tuple[str, Problem | None]:
    """The row's key: text or an integer (as its decimal text) from the key column, else PREFIX-ROW."""
    generated = f"{where.key_prefix}-{where.index:09d}"
    column = config.key_column or ("key" if record.get("key") is not None else None)
    if column is None:
        return generated, None
    value = record.get(column)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return generated, _bad(where, f"key column {column!r} should hold text or an integer, got {value!r}")
    return str(value), None


def _passthrough(record: dict, where: Where) -> tuple[dict[str, Any], Problem | None]:
    """GRIT-20M's ``id`` and CLIP scores, converted to their shard types."""
    fields, problem = {}, None
    for name, kind in SHARD_PASSTHROUGH.items():
        value = record.get(name)
        if value in (None, ""):
            continue
        try:
            fields[name] = kind(value)
        except (TypeError, ValueError):
            problem = problem or _bad(where, f"column {name!r} should hold a {kind.__name__}, got {value!r}")
    return fields, problem


def _kept(record: dict, where: Where, config: InputConfig) -> tuple[dict[str, Any], Problem | None]:
    """``--keep-columns`` values: typed from Parquet, else strings (other JSON values as their text)."""
    fields, problem = {}, None
    for name in config.keep_columns:
        if name in SHARD_PASSTHROUGH:
            continue
        if name not in record:
            problem = problem or _bad(where, f"no column {name!r} to keep; the row has {sorted(record)}")
            continue
        value = record[name]
        fields[name] = value if where.typed or value is None or isinstance(value, str) else json.dumps(value)
    return fields, problem


def _img2dataset_image(record: dict, config: InputConfig) -> tuple[bytes | None, Problem | None]:
    """img2dataset's stored bytes, in the original frame (see ``frames``)."""
    image = record.get(image_column(list(record)) or "")
    if image is None:
        return None, (
            NO_IMAGE_IN_SOURCE,
            str(record.get("error_message") or "the input row holds no image bytes"),
        )
    original = _original_size(record)
    if original is None:
        return image, None  # nothing to undo without the original size
    restored = restore_frame(image, original, config.img2dataset_resize_mode)
    if isinstance(restored, str):
        return None, (UNKNOWN_RESIZE_GEOMETRY, restored)
    return restored, None


def _original_size(record: dict) -> tuple[int, int] | None:
    size = (record.get("original_width"), record.get("original_height"))
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    return size if ok else None


def _image(record: dict, where: Where, config: InputConfig) -> tuple[bytes | None, Problem | None]:
    """Where the pixels come from: img2dataset's bytes, or (None) the URL, downloaded later."""
    if where.fmt == "img2dataset":
        return _img2dataset_image(record, config)
    if not record.get(config.url_column):
        return None, (MISSING_URL, f"no value in column {config.url_column!r}")
    return None, None


def to_row(record: dict, where: Where, config: InputConfig) -> InputRow:
    """The ``InputRow`` of one record; the first problem found, or an unexpected exception, is its reject."""
    try:
        return _to_row(record, where, config)
    except Exception as err:  # this record only: the file's other rows go on
        key = f"{where.key_prefix}-{where.index:09d}"
        error = f"{where.path} line {where.line}: {error_text(err)}"
        return InputRow(key, None, None, where.path, reject=(UNEXPECTED_ERROR, error), index=where.index)


def _to_row(record: dict, where: Where, config: InputConfig) -> InputRow:
    key, key_problem = _key(record, where, config)
    fields, pass_problem = _passthrough(record, where)
    kept, keep_problem = _kept(record, where, config)
    problem = (
        _text_problem(record, where, config)
        or _type_problem(record, where, config, where.fmt)
        or key_problem
        or pass_problem
        or keep_problem
    )
    image, image_file, image_problem = None, None, None
    if problem is None and config.image_path_column:  # located now, read by the fetch stage
        root = image_root(where.path, config.image_root)
        image_file, image_problem = locate_image_file(record.get(config.image_path_column), root)
    elif problem is None:
        image, image_problem = _image(record, where, config)
    caption = record.get(config.caption_column, record.get("txt") if where.fmt == "img2dataset" else None)
    return InputRow(
        key=key,
        url=as_text(record.get(config.url_column)),
        caption=as_text(caption),
        source=where.path,
        image=image,
        image_file=image_file,
        original_size=_original_size(record) if image is not None else None,
        sha256=as_text(record.get("sha256")) if image is not None else None,
        fields={**fields, **kept},
        reject=problem or image_problem,
        index=where.index,
    )


def bad_row(where: Where, error: str) -> InputRow:
    """A line that could not be decoded into a record at all."""
    key = f"{where.key_prefix}-{where.index:09d}"
    return InputRow(key, None, None, where.path, reject=_bad(where, error), index=where.index)
