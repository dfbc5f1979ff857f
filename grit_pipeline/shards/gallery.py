"""A contact sheet (one PNG of tiles) and a self-contained HTML gallery (images as data URIs)."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from grit_pipeline.shards.drawing import Phrase

SHEET_MARGIN = 8  # pixels around and between tiles


@dataclass(frozen=True)
class GalleryItem:
    """One drawn sample: its key, caption, phrases and the image with its boxes (PNG bytes)."""

    key: str
    caption: str
    grounded_caption: str | None
    phrases: tuple[Phrase, ...]
    png: bytes


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sheet_layout(
    sizes: Sequence[tuple[int, int]], columns: int | None = None
) -> tuple[tuple[int, int], list]:
    """The sheet's size and each tile's top-left corner: a grid of equal cells, ``columns`` wide."""
    columns = columns or max(1, math.ceil(math.sqrt(len(sizes))))
    cell_w = max(w for w, _ in sizes)
    cell_h = max(h for _, h in sizes)
    rows = math.ceil(len(sizes) / columns)
    origins = [
        (
            SHEET_MARGIN + (i % columns) * (cell_w + SHEET_MARGIN),
            SHEET_MARGIN + (i // columns) * (cell_h + SHEET_MARGIN),
        )
        for i in range(len(sizes))
    ]
    size = (
        SHEET_MARGIN + min(columns, len(sizes)) * (cell_w + SHEET_MARGIN),
        SHEET_MARGIN + rows * (cell_h + SHEET_MARGIN),
    )
    return size, origins


def contact_sheet(tiles: Sequence[Image.Image], columns: int | None = None) -> Image.Image:
    """The tiles on a light grey sheet, in a grid, in order."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    size, origins = sheet_layout([t.size for t in tiles], columns)
    sheet = Image.new("RGB", size, (235, 235, 235))
    for tile, origin in zip(tiles, origins):
        sheet.paste(tile, origin)
    return sheet


_STYLE = """
body { font-family: sans-serif; margin: 16px; background: #f4f4f4; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; padding: 8px; background: #fff; border: 1px solid #ddd; max-width: 420px; }
figure img { display: block; max-width: 100%; }
figcaption .caption { font-size: 15px; margin: 6px 0; }
figcaption .key { color: #777; font-size: 12px; }
ul.phrases { list-style: none; padding: 0; margin: 4px 0; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle; }
details { font-size: 12px; color: #444; word-break: break-all; }
"""


def _figure(item: GalleryItem) -> str:
    uri = "data:image/png;base64," + base64.b64encode(item.png).decode("ascii")
    phrases = "".join(
        f'<li class="phrase"><span class="swatch" style="background: rgb{p.colour}"></span>'
        f"{html.escape(p.text)} <small>({len(p.boxes)} box{'es' if len(p.boxes) > 1 else ''}, "
        f"score {max(p.scores):.2f})</small></li>"
        for p in item.phrases
    )
    grounded = (
        f"<details><summary>grounded caption</summary><code>{html.escape(item.grounded_caption)}</code></details>"
        if item.grounded_caption
        else ""
    )
    return (
        f'<figure data-key="{html.escape(item.key, quote=True)}">'
        f'<img src="{uri}" alt="{html.escape(item.caption, quote=True)}">'
        f'<figcaption><div class="caption">{html.escape(item.caption)}</div>'
        f'<div class="key">{html.escape(item.key)}</div><ul class="phrases">{phrases}</ul>{grounded}'
        "</figcaption></figure>"
    )


def html_gallery(items: Sequence[GalleryItem], title: str) -> str:
    """One HTML page holding everything (styles and images inline): it opens from disk, no server."""
    figures = "\n".join(_figure(item) for item in items)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1><p>{len(items)} samples</p>\n"
        f'<div class="grid">\n{figures}\n</div></body></html>\n'
    )
