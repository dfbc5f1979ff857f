"""img2dataset's download run in this process: its own Reader, Resizer, Downloader and sample writers.

Its command (``img2dataset ...``) spawns a logger process and worker processes, each importing
albumentations and OpenCV: about a minute per run on a loaded 2-core machine, for the same code.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would check for updates online


def img2dataset(
    url_table,
    folder,
    resize_mode: str = "border",
    output_format: str = "parquet",
    image_size: int = 128,
    keep_columns: list[str] | None = None,
) -> None:
    """Download the urls of a Parquet table (``url``, ``caption``) into ``folder``, as img2dataset does."""
    from img2dataset.downloader import Downloader
    from img2dataset.reader import Reader
    from img2dataset.resizer import Resizer
    from img2dataset.writer import ParquetSampleWriter, WebDatasetSampleWriter

    folder.mkdir()
    (folder / "_tmp").mkdir()
    reader = Reader(
        str(url_table),
        "parquet",
        "url",
        "caption",
        None,
        None,
        keep_columns,
        1000,
        set(),
        str(folder / "_tmp"),
        0,
    )
    writer = ParquetSampleWriter if output_format == "parquet" else WebDatasetSampleWriter
    resizer = Resizer(image_size=image_size, resize_mode=resize_mode, resize_only_if_bigger=False)
    downloader = Downloader(
        writer, resizer, 2, True, False, str(folder), reader.column_list, 5, 1000, 5, "sha256", None, "jpg", 0,
        "img2dataset", None,
    )  # fmt: skip
    for shard in reader:
        ok, _ = downloader(shard)
        assert ok, f"img2dataset failed on shard {shard[0]}"
