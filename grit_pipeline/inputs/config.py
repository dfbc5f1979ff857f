"""How inputs are read (``InputConfig``), what comes out (``InputRow``), and the reasons a row is unusable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grit_pipeline.flags import flag, flag_error, require_choice, require_min
from grit_pipeline.schemas.shard import IMAGE_COLUMNS  # noqa: F401  (re-exported: the image columns read)

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")

# Input columns that are shard columns too (GRIT-20M metadata), passed through with their shard type.
SHARD_PASSTHROUGH = {"id": int, "clip_similarity_vitb32": float, "clip_similarity_vitl14": float}
INPUT_FORMATS = ("auto", "table", "img2dataset")
# How img2dataset resized the images it stored (it does not record it): auto infers what the sizes
# allow and rejects what they do not (a square image of a non-square original: border or center_crop).
IMG2DATASET_RESIZE_MODES = ("auto", "border", "center_crop", "keep_ratio", "keep_ratio_largest", "no")

# Reject reasons of the read stage.
MISSING_URL = "missing_url"
BAD_INPUT_ROW = "bad_input_row"  # undecodable bytes, wrong types, over-long fields, broken lines
UNREADABLE_FILE = "unreadable_file"  # a file that broke off part-way (one reject for the rest)
NO_IMAGE_IN_SOURCE = "no_image_in_source"
MISSING_IMAGE_FILE = "missing_image_file"
BAD_IMAGE_PATH = "bad_image_path"  # a URL, or a path outside --image-root, in --image-path-column
UNKNOWN_RESIZE_GEOMETRY = "unknown_resize_geometry"  # img2dataset image whose frame cannot be inferred
DUPLICATE_KEY = "duplicate_key"


class InputError(ValueError):
    """An input file or its columns are not what the job was told to expect."""


@dataclass(frozen=True)
class InputConfig:
    """How to read the inputs (recorded in the run manifest)."""

    url_column: str = flag("url", help="column of image URLs")
    caption_column: str = flag("caption", help="column of captions")
    key_column: str | None = flag(
        None, help="column of row keys (default: 'key' when present, else FILE_STEM-ROW)"
    )
    keep_columns: tuple[str, ...] = flag(
        (), metavar="A,B", sep=",", help="input columns copied to the shards, like img2dataset's (comma list)"
    )
    # A column of local image file paths: bytes read from there, no download. Never URLs.
    image_path_column: str | None = flag(
        None, help="column of local image paths to read instead of downloading (URLs there are refused)"
    )
    image_root: str | None = flag(
        None,
        metavar="DIR",
        help="folder the --image-path-column paths are relative to (default: each table's own folder)",
    )
    input_format: str = flag(
        "auto", choices=INPUT_FORMATS, help="auto: img2dataset when files hold image bytes, else url tables"
    )
    img2dataset_resize_mode: str = flag(
        "auto",
        choices=IMG2DATASET_RESIZE_MODES,
        help="how img2dataset resized the inputs (it does not record it); auto rejects square images "
        "of non-square originals, which border and center_crop both make",
    )
    batch_rows: int = 1024  # Parquet rows read at a time
    # Longest text value a row may hold. Captions are limited far lower by the text stage; this
    # bounds pass-through values and broken quoting that swallows the rest of a CSV into one field.
    max_field_chars: int = 1 << 20

    def __post_init__(self) -> None:
        require_choice(
            self, InputError, input_format=INPUT_FORMATS, img2dataset_resize_mode=IMG2DATASET_RESIZE_MODES
        )
        for name in ("url_column", "caption_column"):
            if not getattr(self, name):
                raise flag_error(self, name, "must name a column", InputError)
        require_min(self, InputError, batch_rows=1, max_field_chars=1)


@dataclass(frozen=True)
class InputRow:
    """One input row on its way through the job."""

    key: str
    url: str | None
    caption: str | None
    source: str  # the input file it came from
    image: bytes | None = None  # already-downloaded bytes (img2dataset inputs)
    # An --image-path-column file (``image_files.ImageFile``), located and checked; read by the fetch stage.
    image_file: Any = None
    original_size: tuple[int, int] | None = None  # recorded by img2dataset before it resized
    sha256: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # pass-through shard columns and --keep-columns
    reject: tuple[str, str] | None = None  # (reason, error) when the row is unusable as read
    index: int = 0  # position in its file: the first of rows sharing a key wins
