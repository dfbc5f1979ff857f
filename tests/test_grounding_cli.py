"""`grit ground` in-process: text stage + tiny detector on one image, JSON, drawing and errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from grit_pipeline.cli import main
from grit_pipeline.grounding import save_tiny_detector

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_detector(tmp_path_factory.mktemp("tiny") / "gd")


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (200, 150), (128, 128, 128)).save(path)
    return path


def test_json_lists_every_noun_chunk_with_boxes_and_draws_them(tiny_dir, image_path, tmp_path, capsys):
    out = tmp_path / "drawn" / "boxes.png"
    caption = "A dog chasing a red ball on the grass"
    argv = ["ground", "--image", str(image_path), "--caption", caption, "--detector", str(tiny_dir)]
    code = main([*argv, "--box-threshold", "0.5", "--json", "--out", str(out)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert [c["text"] for c in record["noun_chunks"]] == ["A dog", "a red ball", "the grass"]
    assert (record["width"], record["height"]) == (200, 150)
    assert record["provenance"]["box_threshold"] == 0.5
    boxes = [b for c in record["noun_chunks"] for b in c["boxes"]]
    assert boxes and all(b["score"] > 0.5 for b in boxes)
    for found in boxes:
        x1, y1, x2, y2 = found["box_pixels"]
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 150
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == (150, 200, 3)
    assert (drawn != 128).any(axis=2).sum() > 50  # outlines and labels were painted on the grey image


def test_table_output_and_the_reject_reason(tiny_dir, image_path, capsys):
    argv = ["ground", "--image", str(image_path), "--caption", "a cat", "--detector", str(tiny_dir)]
    assert main([*argv, "--box-threshold", "0.99"]) == 0
    text = capsys.readouterr().out
    assert "'a cat': no box" in text
    assert "rejected: no_box_above_threshold" in text


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--detector", "IDEA-Research/grounding-dino-tiny"], "local directory"),
        (["--detector", "/no/such/folder"], "does not exist"),
        (["--box-threshold", "2"], "--box-threshold must be in [0, 1], got 2.0"),
    ],
)
def test_errors_are_one_line_without_traceback(image_path, capsys, extra, expected):
    code = main(["ground", "--image", str(image_path), "--caption", "a dog", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("grit ground: error:")]) == 1


def test_an_unreadable_image_and_a_caption_without_chunks(tmp_path, tiny_dir, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert main(["ground", "--image", str(broken), "--caption", "a dog", "--detector", str(tiny_dir)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32)).save(good)
    assert main(["ground", "--image", str(good), "--caption", "   ", "--detector", str(tiny_dir)]) == 2
    assert "cannot be grounded: empty_caption" in capsys.readouterr().err
