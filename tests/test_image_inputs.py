"""Inputs that carry their own pixels: ``--image-path-column`` files and img2dataset output in every resize mode.

- ``--image-path-column`` reads local files only: a loopback URL there sends no request (counted on
  the server), even with the address guard lifted; paths leaving ``--image-root`` are refused.
- img2dataset output, made by img2dataset's own Reader, Resizer, Downloader and writers in this
  process against the loopback server, in each ``resize_mode``: the image read back is in the
  original frame (a red block sits where it sits in the original), and `grit validate` passes on
  the builds made from it.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from img2dataset_runs import img2dataset
from PIL import Image

from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.cli import main as grit
from grit_pipeline.inputs import InputConfig, list_input_files, read_file
from grit_pipeline.testing import LoopbackServer, Route

COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--timeout", "10"]
COMMON += ["--retries", "0", "--progress-interval", "0"]
MODES = ("border", "center_crop", "keep_ratio", "keep_ratio_largest", "no")
# (width, height) of each source picture and where its red block is, normalised (inside any centre crop).
SOURCES = {
    (400, 300): (0.40, 0.35, 0.60, 0.65),
    (300, 400): (0.30, 0.45, 0.70, 0.55),
    (200, 200): (0.2, 0.2, 0.5, 0.5),
}


def picture(size, block) -> bytes:
    image = Image.new("RGB", size, (90, 90, 90))
    w, h = size
    image.paste(
        (255, 0, 0), (round(block[0] * w), round(block[1] * h), round(block[2] * w), round(block[3] * h))
    )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def red_block(data: bytes) -> tuple[float, float, float, float]:
    """The red block's box in an image, normalised by the image's size."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    mask = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2d_modes")
    with LoopbackServer() as server:
        urls = [
            server.add(f"/{w}x{h}.png", Route(picture((w, h), b), headers=(("Content-Type", "image/png"),)))
            for (w, h), b in SOURCES.items()
        ]
        captions = [f"a red block on a grey picture number {i}" for i in range(len(urls))]
        pq.write_table(pa.table({"url": urls, "caption": captions}), root / "urls.parquet")
        folders = {mode: root / mode for mode in MODES}
        for mode, folder in folders.items():
            img2dataset(root / "urls.parquet", folder, mode)
        img2dataset(root / "urls.parquet", root / "border-wds", "border", "webdataset")
    return root, folders


@pytest.mark.parametrize("mode", MODES)
def test_img2dataset_images_come_back_in_the_original_frame(outputs, mode):
    _, folders = outputs
    config = InputConfig(img2dataset_resize_mode=mode)
    rows = [r for f in list_input_files(str(folders[mode])) for r in read_file(f, config)]
    assert len(rows) == len(SOURCES) and all(r.reject is None for r in rows)
    for row in rows:
        block = SOURCES[row.original_size]
        size = Image.open(io.BytesIO(row.image)).size
        w, h = row.original_size
        assert abs(size[0] * h - size[1] * w) <= 0.5 * (w + h), (mode, size, row.original_size)
        assert red_block(row.image) == pytest.approx(block, abs=0.02), (mode, row.original_size)


def test_webdataset_output_is_restored_too(outputs):
    root, _ = outputs
    config = InputConfig(img2dataset_resize_mode="border")
    rows = [r for f in list_input_files(str(root / "border-wds")) for r in read_file(f, config)]
    assert sorted(r.original_size for r in rows) == sorted(SOURCES)
    for row in rows:
        assert red_block(row.image) == pytest.approx(SOURCES[row.original_size], abs=0.02)


@pytest.mark.parametrize("mode", ["border", "center_crop"])
def test_auto_recognises_border_and_center_crop_from_the_pixels(outputs, mode):
    """img2dataset's default output (border) and centre crops, read under auto: restored as declared ones."""
    _, folders = outputs
    rows = [r for f in list_input_files(str(folders[mode])) for r in read_file(f, InputConfig())]
    assert len(rows) == len(SOURCES) and all(r.reject is None for r in rows)
    for row in rows:
        assert red_block(row.image) == pytest.approx(SOURCES[row.original_size], abs=0.02), row.original_size


def test_white_on_white_is_rejected_under_auto_with_the_option_named():
    """A white product shot padded with white fits border and center_crop alike: rejected, not guessed."""
    from img2dataset.resizer import Resizer

    from grit_pipeline.inputs.frames import plan_restore

    image = Image.new("RGB", (400, 300), (255, 255, 255))
    image.paste((30, 60, 200), (150, 100, 250, 200))
    data = io.BytesIO()
    image.save(data, "PNG")
    data.seek(0)
    stored, *_ = Resizer(image_size=128, resize_mode="border", resize_only_if_bigger=False)(data)
    decoded = Image.open(io.BytesIO(stored))
    reason = plan_restore(decoded, (400, 300), "auto")
    assert isinstance(reason, str) and "--img2dataset-resize-mode" in reason
    assert plan_restore(decoded, (400, 300), "border").crop == (0, 16, 128, 112)


def test_a_declared_center_crop_on_border_padding_is_rejected(outputs):
    _, folders = outputs
    config = InputConfig(img2dataset_resize_mode="center_crop")  # but these were padded
    rows = [r for f in list_input_files(str(folders["border"])) for r in read_file(f, config)]
    rejected = sorted(r.reject[0] for r in rows if r.reject)
    assert rejected == ["unknown_resize_geometry"] * 2  # the two non-square originals


def test_a_declared_border_needs_its_white_padding(outputs):
    _, folders = outputs
    config = InputConfig(img2dataset_resize_mode="border")  # but these were centre-cropped
    rows = [r for f in list_input_files(str(folders["center_crop"])) for r in read_file(f, config)]
    rejected = sorted(r.reject[0] for r in rows if r.reject)
    assert rejected == ["unknown_resize_geometry"] * 2  # the two non-square originals


@pytest.mark.parametrize(
    ("mode", "folders"),
    [("border", ("border", "keep_ratio", "keep_ratio_largest", "no")), ("center_crop", ("center_crop",))],
)
def test_builds_from_every_resize_mode_validate(outputs, tmp_path, mode, folders):
    _, paths = outputs
    inputs = [arg for name in folders for arg in ("--input", str(paths[name]))]
    out = tmp_path / "out"
    assert run([*inputs, "--output", str(out), "--img2dataset-resize-mode", mode, *COMMON]) == 0
    counts = load_manifest(str(out))["counts"]
    assert counts["input"] == len(folders) * len(SOURCES) == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] > 0
    assert grit(["validate", str(out / "shards"), "--quiet"]) == 0


def test_image_path_column_never_downloads(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(picture((64, 48), (0.2, 0.2, 0.6, 0.6)))
    (tmp_path / "outside.png").write_bytes(picture((64, 48), (0.2, 0.2, 0.6, 0.6)))
    with LoopbackServer() as server:
        url = server.add("/side-door.png", Route(picture((64, 48), (0.2, 0.2, 0.6, 0.6))))
        rows = [
            ("a.png", "a red block on a grey picture"),
            (url, "a red block behind a side door"),
            ("../outside.png", "a red block outside the root"),
            ("file://" + str(tmp_path / "outside.png"), "a red block behind a file URL"),
            ("missing.png", "a red block that is not there"),
        ]
        pq.write_table(
            pa.table({"path": [p for p, _ in rows], "caption": [c for _, c in rows]}), tmp_path / "t.parquet"
        )
        argv = [
            "--input",
            str(tmp_path / "t.parquet"),
            "--output",
            str(tmp_path / "out"),
            "--image-path-column",
            "path",
        ]
        argv += ["--image-root", str(tmp_path / "images"), "--allow-private-addresses", *COMMON]
        assert run(argv) == 0
        assert sum(server.hits.values()) == 0  # not one request, with the address guard lifted
    table = pa.concat_tables(pq.read_table(p) for p in (tmp_path / "out" / "rejects").glob("*.parquet"))
    reasons = dict(zip(table["caption"].to_pylist(), table["reason"].to_pylist()))
    assert reasons == {
        "a red block behind a side door": "bad_image_path",
        "a red block outside the root": "bad_image_path",
        "a red block behind a file URL": "bad_image_path",
        "a red block that is not there": "missing_image_file",
    }
    assert load_manifest(str(tmp_path / "out"))["counts"]["accepted"] == 1
