"""`grit show`: the drawn PNGs read back pixel by pixel; the HTML gallery rendered in headless Chromium."""

import shutil
import tempfile
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image
from shard_factory import BACKGROUND, FILLS, default_samples, write_build_output, write_grit20m

from grit_pipeline.cli import main
from grit_pipeline.shards.drawing import PALETTE
from grit_pipeline.shards.gallery import SHEET_MARGIN

SIZE = 256  # --size used below: the longer side of every drawn image


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    root = tmp_path_factory.mktemp("show")
    write_build_output(str(root / "build"), shards=2, rows_per_shard=3)
    out = root / "show"
    assert (
        main(["show", str(root / "build"), "--n", "4", "--out", str(out), "--size", str(SIZE), "--quiet"])
        == 0
    )
    return root, out, default_samples(6)[:4]


def _rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _close(pixel, colour, tolerance=40) -> bool:
    return int(np.abs(np.asarray(pixel) - colour).max()) <= tolerance


def _fitted_size(sample) -> tuple[int, int]:
    scale = SIZE / max(sample.width, sample.height)  # stored images keep the original aspect
    return round(sample.width * scale), round(sample.height * scale)


def _edge_has(pixels, x, y, colour, axis) -> bool:
    """Whether the outline (2 px wide) crosses near (x, y): some pixel within 1 px across the edge matches."""
    offsets = [(d, 0) if axis == "x" else (0, d) for d in (-1, 0, 1)]
    return any(_close(pixels[y + dy, x + dx], colour) for dx, dy in offsets)


def _check_boxes(pixels: np.ndarray, sample, origin=(0, 0)):
    """Each phrase's box outline in its palette colour; the inside keeps the image's own fill."""
    ox, oy = origin
    width, height = _fitted_size(sample)
    for i, phrase in enumerate(sample.phrases):
        for x1, y1, x2, y2 in phrase.boxes:
            left, right = ox + int(x1 * width), ox + int(x2 * width) - 1
            bottom = oy + int(y2 * height) - 1
            middle_x, middle_y = ox + int((x1 + x2) / 2 * width), oy + int((y1 + y2) / 2 * height)
            assert _edge_has(pixels, left + 1, middle_y, PALETTE[i], "x"), (phrase.text, "left edge")
            assert _edge_has(pixels, right - 1, middle_y, PALETTE[i], "x"), (phrase.text, "right edge")
            assert _edge_has(pixels, middle_x, bottom - 1, PALETTE[i], "y"), (phrase.text, "bottom edge")
            inside = pixels[middle_y, (left + middle_x) // 2]
            assert _close(inside, FILLS[i]), (phrase.text, inside)


def test_sample_pngs_have_boxes_where_the_spans_say(shown):
    _, out, samples = shown
    for index, sample in enumerate(samples):
        pixels = _rgb(out / "samples" / f"{index:04d}.png")
        assert pixels.shape[:2] == _fitted_size(sample)[::-1]
        _check_boxes(pixels, sample)
        assert _close(pixels[-3, -3], BACKGROUND)  # a corner outside every box stays untouched


def test_contact_sheet_layout_and_pixels(shown):
    _, out, samples = shown
    pixels = _rgb(out / "contact_sheet.png")
    columns = 2  # four samples: a 2 x 2 grid
    cell_w = SIZE  # every tile is as wide as the longer side (the legend panel spans it)
    assert pixels.shape[1] == SHEET_MARGIN + columns * (cell_w + SHEET_MARGIN)
    assert pixels.shape[0] > SHEET_MARGIN + 2 * (SIZE + SHEET_MARGIN)  # legends under the images
    _check_boxes(pixels, samples[0], origin=(SHEET_MARGIN, SHEET_MARGIN))
    _check_boxes(pixels, samples[1], origin=(SHEET_MARGIN + cell_w + SHEET_MARGIN, SHEET_MARGIN))
    # The legend of the third sample (three phrases) shows a swatch in each phrase colour.
    for colour in PALETTE[:3]:
        assert np.any(np.all(pixels == colour, axis=-1)), colour


def test_select_by_key(shown, capsys):
    root, _, _ = shown
    out = root / "by_key"
    assert main(["show", str(root / "build"), "--key", "s00004", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["0000.png"]
    assert "s00004" in (out / "gallery.html").read_text()
    assert main(["show", str(root / "build"), "--key", "nope", "--out", str(out), "--quiet"]) == 2
    assert "keys not found" in capsys.readouterr().err


def test_grit20m_without_images_is_a_clear_error(tmp_path, capsys):
    path = write_grit20m(str(tmp_path / "part.parquet"), default_samples(2))
    assert main(["show", path, "--out", str(tmp_path / "show"), "--quiet"]) == 2
    assert "GRIT-20M files carry only URLs" in capsys.readouterr().err
    assert main(["show", path, "--key", "s00001", "--out", str(tmp_path / "show"), "--quiet"]) == 2
    assert "include rows without image bytes" in capsys.readouterr().err


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_session():
    """Headless Chromium under Selenium; fails (not skips) the test when the browser is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("Debian's chromium and chromium-driver are needed for this test: run `make browser`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="grit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    # Explicit binary and driver paths: Selenium Manager never runs (it would go to the network).
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.chromium
def test_html_gallery_renders_in_chromium(shown):
    _, out, samples = shown
    html = (out / "gallery.html").read_text()
    assert "http" not in html.split("<body>", 1)[1]  # nothing fetched from anywhere: images are inline
    with chromium_session() as browser:
        browser.get((out / "gallery.html").as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        captions = [e.text for e in browser.find_elements("css selector", "figcaption .caption")]
        figures = browser.find_elements("css selector", "figure")
        phrases = [len(f.find_elements("css selector", "li.phrase")) for f in figures]
    assert images == [[True, *_fitted_size(s)] for s in samples]  # every image decoded at its size
    assert captions == [s.caption for s in samples]
    assert phrases == [len(s.phrases) for s in samples]
