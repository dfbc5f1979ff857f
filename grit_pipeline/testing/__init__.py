"""What the tests and the benchmarks share: a loopback HTTP server and the images it serves.

``from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes`` is all most tests need. The
benchmarks' shared pieces are in modules of their own, imported by name (they bring torch,
transformers or pyarrow): ``served`` (image servers in processes of their own), ``builds`` (one
`grit build` as a process, its manifest's figures), ``detectors`` (grounding-dino-tiny's
architecture with random weights), ``wheel`` (the project's wheel from a checkout).

Library layer: nothing here imports Beam (``tests/test_layers.py``); builds run as processes.
"""

from grit_pipeline.testing.http_server import HOLD_MAX_S, LoopbackServer, Route
from grit_pipeline.testing.images import (
    bomb_png,
    jpeg_bytes,
    photo_jpeg,
    photo_mosaic_jpeg,
    png_bytes,
    psnr_db,
)

__all__ = [
    "HOLD_MAX_S",
    "LoopbackServer",
    "Route",
    "bomb_png",
    "jpeg_bytes",
    "photo_jpeg",
    "photo_mosaic_jpeg",
    "png_bytes",
    "psnr_db",
]
