"""Every shard tool on every hostile shard: one line per problem, a non-zero exit, never a traceback.

The table below is the contract (issue 15 item 8). A problem line names the file (and for a row
problem the row and key); the tools other than `grit validate` end with one `grit TOOL: error:` line
and exit status 2, after drawing or writing the sound rows; `grit validate` exits with status 1.
`grit head` and `grit inspect` never decode an image, so an image over the pixel limit is not theirs
to refuse.
"""

from __future__ import annotations

import json
import re

import pytest
from hostile_shards import HOSTILE

from grit_pipeline.cli import main

# kind -> (pattern every problem line matches, problem lines from validate, from the other tools)
EXPECTED = {
    "wrong_types": (r"column '(caption|noun_chunks)' has type (int64|string), expected", 2, 2),
    "inverted_box": (r"row 0 key 's00000': (noun_chunks|ref_exps)\[0\]: box \(0.9, 0.8, 0.1, 0.2\) breaks", 2, 2),
    "nan_box": (r"row 0 key 's00000': (noun_chunks|ref_exps)\[0\]: holds a null, NaN", 2, 2),
    "truncated": (r"cannot read as Parquet \(ArrowInvalid: .*magic bytes", 1, 1),
    "not_parquet": (r"cannot read as Parquet", 1, 1),
    "missing_columns": (r"missing column", 1, 1),
    "huge_image": (r"row 0 key 's00000': image is 12000x12000 = 144,000,000 pixels, over the limit of 50,000,000", 1, 1),
}  # fmt: skip
TOOLS = {
    "inspect": [],
    "validate": [],
    "show": ["--out", "{out}"],
    "head": [],
    "convert": ["--to", "kosmos2-tsv", "--out", "{out}"],
}
NEVER_DECODE = {"head", "inspect"}
ROW_PROBLEMS = {"inverted_box", "nan_box", "huge_image"}  # the shard's other row is sound


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return {kind: make(root / kind) for kind, make in HOSTILE.items()}


def _run(capsys, tool: str, path: str, out, *extra) -> tuple[int, list[str], list[str]]:
    argv = [tool, path, *(a.format(out=out) for a in [*TOOLS[tool], *extra])]
    code = main(argv + ([] if tool == "head" else ["--quiet"]))  # an exception here fails the test
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_every_tool_answers_every_hostile_shard(hostile, tmp_path, capsys, tool, kind):
    path = hostile[kind]
    pattern, validate_lines, tool_lines = EXPECTED[kind]
    code, out, err = _run(capsys, tool, path, tmp_path / "out")
    if kind == "huge_image" and tool in NEVER_DECODE:
        assert code == 0 and not any(line.startswith(path) for line in err), err
        return
    if tool == "validate":
        problems = [line for line in out if line.startswith(f"{path}: ")]
        assert code == 1 and len(problems) == validate_lines == len(out), out
        assert err[-1].startswith("invalid: ")
    else:
        problems = [line for line in err if line.startswith(f"{path}: ")]
        assert code == 2 and len(problems) == tool_lines, err
        assert err[-1].startswith(f"grit {tool}: error: "), err
        others = [line for line in err[:-1] if not line.startswith(f"{path}: ")]
        assert all(re.match(r"\d+ (samples drawn|rows written)", line) for line in others), err
    assert all(re.search(pattern, line) for line in problems), problems


@pytest.mark.parametrize("kind", sorted(ROW_PROBLEMS))
def test_the_sound_rows_are_still_drawn_and_converted(hostile, tmp_path, capsys, kind):
    assert _run(capsys, "show", hostile[kind], tmp_path / "show")[0] == 2
    assert sorted(p.name for p in (tmp_path / "show" / "samples").iterdir()) == ["0000.png"]
    assert _run(capsys, "convert", hostile[kind], tmp_path / "tsv")[0] == 2
    lines = (tmp_path / "tsv" / f"{kind}.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in lines] == ["two cats on a sofa"]  # row 1 only


@pytest.mark.parametrize(
    "to", [["--to", "webdataset"], ["--to", "jsonl", "--include-images"], ["--to", "hf-dataset"]]
)
def test_every_format_that_carries_images_applies_the_pixel_limit(hostile, tmp_path, capsys, to):
    path = hostile["huge_image"]
    code = main(["convert", path, *to, "--out", str(tmp_path / "o"), "--quiet"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2
    assert [line for line in lines if line.startswith(path)] == [
        f"{path}: row 0 key 's00000': image is 12000x12000 = 144,000,000 pixels, over the "
        "limit of 50,000,000 (the build's --max-pixels default; raise it with --max-pixels)"
    ]


def test_jsonl_without_images_does_not_refuse_an_image_it_does_not_carry(hostile, tmp_path, capsys):
    code = main(["convert", hostile["huge_image"], "--to", "jsonl", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "o" / "huge_image.jsonl").read_text().splitlines()]
    assert [row["key"] for row in rows] == ["s00000", "s00001"]


def test_the_pixel_limit_is_the_builds_and_can_be_changed(hostile, tmp_path, capsys):
    from grit_pipeline.fetch import FetchConfig
    from grit_pipeline.shards.checks import MAX_PIXELS

    assert MAX_PIXELS == FetchConfig().max_pixels == 50_000_000
    path = hostile["inverted_box"]  # its images are 320x240 and 240x320 = 76,800 pixels
    code, out, _ = _run(capsys, "validate", path, None, "--max-pixels", "76799")
    assert code == 1 and sum("76,800 pixels, over the limit of 76,799" in line for line in out) == 2
