"""Input readers: every accepted input file -> ``InputRow`` records, streamed, on any fsspec path.

Accepted inputs:

- url+caption tables: Parquet, CSV, TSV or JSON lines (``.gz``, ``.bz2``, ``.zst`` ... inferred
  by fsspec), with configurable column names;
- img2dataset output folders: Parquet with image bytes (a ``jpg``/``png``/``webp`` column) or
  webdataset tars (``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``); the bytes are used, nothing is
  downloaded again, and images img2dataset padded or cropped are put back into the original frame;
- GRIT-20M Parquet files: url + caption are re-grounded; ``id`` and ``clip_similarity_*`` pass through.

Rows that cannot be used (no URL, img2dataset stored no image, a malformed line, undecodable
bytes, a wrong type) come out with a ``reject`` reason instead of being dropped, so every input
row is accounted for. Modules: ``config`` (options, records, reasons), ``files`` (listing, format,
checks before a job), ``readers`` (file -> records), ``rows`` (record -> ``InputRow``),
``image_files`` (``--image-path-column``), ``frames`` (img2dataset's resize modes undone).
"""

from grit_pipeline.inputs.config import (
    DUPLICATE_KEY,
    IMAGE_COLUMNS,
    IMG2DATASET_RESIZE_MODES,
    INPUT_FORMATS,
    SHARD_PASSTHROUGH,
    InputConfig,
    InputError,
    InputRow,
)
from grit_pipeline.inputs.files import (
    check_input_files,
    file_format,
    keep_column_fields,
    key_prefixes,
    list_input_files,
)
from grit_pipeline.inputs.readers import read_file, read_retry_rows

__all__ = [
    "DUPLICATE_KEY",
    "IMAGE_COLUMNS",
    "IMG2DATASET_RESIZE_MODES",
    "INPUT_FORMATS",
    "SHARD_PASSTHROUGH",
    "InputConfig",
    "InputError",
    "InputRow",
    "check_input_files",
    "file_format",
    "keep_column_fields",
    "key_prefixes",
    "list_input_files",
    "read_file",
    "read_retry_rows",
]
