"""Issue 23, hostile input round two: image files, HTTP, formats, checkpoints, the commit, the reasons table.

Each test fails on the code before the fix. Servers run on 127.0.0.1 only.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image
from test_beam_output_dir import staged_run
from test_fetch_network import IMAGE, ScriptedServer, answer, fetch, in_turn

from grit_pipeline import reasons
from grit_pipeline.beam_jobs import commit as commit_module
from grit_pipeline.beam_jobs import run
from grit_pipeline.beam_jobs.commit import commit
from grit_pipeline.beam_jobs.modes import recover
from grit_pipeline.beam_jobs.output_dir import load_manifest
from grit_pipeline.cli import main
from grit_pipeline.fetch import TRANSIENT_REASONS, FetchConfig, FetchedImage, decode_image, make_resizer
from grit_pipeline.fetch.results import FetchError
from grit_pipeline.model.synth import SynthConfig, write_synth
from grit_pipeline.model.train import TrainConfig, train
from grit_pipeline.testing import LoopbackServer, Route, jpeg_bytes

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--detector", "tiny-random", "--allow-network", "127.0.0.1/32", "--timeout", "10"]
COMMON += ["--retries", "0", "--progress-interval", "0"]


def png(size=(64, 48)) -> bytes:
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste((200, 30, 30), (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def rejects_by_caption(out: Path) -> dict[str, tuple[str, str]]:
    files = list((out / "rejects").glob("*.parquet"))
    if not files:
        return {}
    table = pa.concat_tables(pq.read_table(p) for p in files)
    return {c: (s, r) for c, s, r in zip(*(table[n].to_pylist() for n in ("caption", "stage", "reason")))}


# --- 2. and 7. --image-path-column: links out of the root, --max-bytes, rows naming one file ----------


@pytest.fixture(scope="module")
def image_file_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("image-files")
    images, outside = base / "images", base / "outside"
    images.mkdir()
    outside.mkdir()
    (images / "a.png").write_bytes(png())
    (outside / "secret.png").write_bytes(png((80, 60)))
    (images / "file-link.png").symlink_to(outside / "secret.png")
    (images / "folder-link").symlink_to(outside, target_is_directory=True)
    big = Image.new("RGB", (200, 150), (10, 200, 10))
    big.save(images / "big.bmp", "BMP")  # 90 kB, over --max-bytes 20000
    (images / "inside-link.png").symlink_to(images / "a.png")  # a link inside the root is fine...
    rows = [
        ("a.png", "a red block on a grey picture"),
        ("file-link.png", "a red block behind a file link"),
        ("folder-link/secret.png", "a red block behind a folder link"),
        ("big.bmp", "a green block in a big file"),
        ("./sub/../a.png", "a red block named a second way"),
        ("inside-link.png", "a red block named a third way"),  # ...and the same file as a.png
    ]
    pq.write_table(
        pa.table({"path": [p for p, _ in rows], "caption": [c for _, c in rows]}), base / "t.parquet"
    )
    out = base / "out"
    argv = ["--input", str(base / "t.parquet"), "--output", str(out), "--image-path-column", "path"]
    argv += ["--image-root", str(images), "--max-bytes", "20000", *COMMON]
    assert run(argv) == 0
    return out


def test_links_out_of_the_image_root_are_refused(image_file_build):
    got = rejects_by_caption(image_file_build)
    assert got["a red block behind a file link"] == ("read", "bad_image_path")
    assert got["a red block behind a folder link"] == ("read", "bad_image_path")


def test_max_bytes_applies_to_image_files(image_file_build):
    assert rejects_by_caption(image_file_build)["a green block in a big file"] == ("fetch", "file_too_large")


def test_rows_naming_one_file_are_deduplicated_before_it_is_read(image_file_build):
    got = rejects_by_caption(image_file_build)
    assert got["a red block named a second way"] == ("dedup", "duplicate")
    assert got["a red block named a third way"] == ("dedup", "duplicate")
    assert load_manifest(str(image_file_build))["counts"]["accepted"] == 1


def test_an_image_file_over_the_cap_is_never_read(tmp_path):
    from grit_pipeline.inputs.image_files import locate_image_file

    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(64 * 2**30)  # 64 GiB, sparse: reading it would take minutes and all memory
    located, problem = locate_image_file("huge.png", str(tmp_path))
    assert problem is None
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        located.read(max_bytes=1000)
    assert caught.value.failure.reason == "file_too_large" and time.monotonic() - started < 5


def test_a_link_swapped_in_after_the_read_stage_is_refused_when_read(tmp_path):
    from grit_pipeline.inputs.image_files import locate_image_file

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    located, _ = locate_image_file("a.png", str(tmp_path / "root"))
    (tmp_path / "root" / "a.png").unlink()
    (tmp_path / "root" / "a.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(FetchError) as caught:
        located.read(max_bytes=10**6)
    assert caught.value.failure.reason == "bad_image_path"


# --- 4. and 10. HTTP: a cut body, Content-Length: ², 103 Early Hints, a paused host -------------------


def cut_body(fraction: float):
    def script(handler, _count):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(IMAGE)))
        handler.end_headers()
        handler.wfile.write(IMAGE[: int(len(IMAGE) * fraction)])
        handler.wfile.flush()
        handler.close_connection = True

    return script


@pytest.fixture(scope="module")
def server():
    with ScriptedServer() as srv:
        yield srv


def test_a_body_cut_part_way_is_transient_and_retried(server):
    url = server.add("/cut-always.jpg", cut_body(0.6))
    [failure] = fetch([url], retries=0)
    assert (failure.reason, failure.transient) == ("truncated_body", True)
    assert "truncated_body" in TRANSIENT_REASONS  # what --retry-rejects runs again
    url = server.add("/cut-once.jpg", in_turn(cut_body(0.6), answer()))
    [result] = fetch([url], retries=1)
    assert isinstance(result, FetchedImage) and server.hits("/cut-once.jpg") == 2


def test_a_cut_body_is_picked_up_by_retry_rejects(tmp_path):
    with LoopbackServer() as http:
        url = http.add("/c.jpg", Route(jpeg_bytes(90, 70)))
        pq.write_table(pa.table({"url": [url], "caption": ["a red square"]}), tmp_path / "in.parquet")
        out = tmp_path / "out"
        with ScriptedServer() as cutting:
            cut_url = cutting.add("/c.jpg", cut_body(0.5))
            pq.write_table(pa.table({"url": [cut_url], "caption": ["a red square"]}), tmp_path / "in.parquet")
            assert run(["--input", str(tmp_path / "in.parquet"), "--output", str(out), *COMMON]) == 0
            assert rejects_by_caption(out)["a red square"] == ("fetch", "truncated_body")
            cutting.scripts["/c.jpg"] = answer(body=jpeg_bytes(90, 70))  # the server is whole again
            assert run(["--retry-rejects", str(out), *COMMON]) == 0
    assert load_manifest(str(out))["counts"]["accepted"] == 1


def test_a_superscript_content_length_is_no_length(server):
    def script(handler, _count):
        handler.send_response(200)
        handler.send_header("Content-Length", "\u00b2")
        handler.end_headers()
        handler.wfile.write(IMAGE)
        handler.close_connection = True

    [result] = fetch([server.add("/superscript.jpg", script)])
    assert isinstance(result, FetchedImage), result  # read to the end, as http.client does


def test_103_early_hints_before_the_answer_are_skipped(server):
    def script(handler, _count):
        handler.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        answer()(handler, _count)

    [result] = fetch([server.add("/early-hints.jpg", script)])
    assert isinstance(result, FetchedImage), result


def test_rows_of_a_paused_host_say_no_request_was_sent(server):
    busy = server.add("/paused-503.jpg", answer(503, b"", (("Retry-After", "999999"),)))
    other = server.add("/paused-other.jpg", answer())
    # Limits of their own: a fresh per-host limiter, so no other test's pause is seen here.
    started = time.monotonic()
    results = fetch(
        [busy, other], retries=0, thread_count=1, timeout_s=1.0, total_timeout_s=1.0,
        max_retry_after_s=4.0, max_host_requests_per_s=977.0,
    )  # fmt: skip
    assert results[0].reason == "http_503"
    assert (results[1].reason, results[1].transient) == ("host_paused", True)
    assert "no request sent" in results[1].error and server.hits("/paused-other.jpg") == 0
    assert time.monotonic() - started < 3.0  # not queued behind the pause


# --- 9. formats: only the allow-list is decoded, the pixel limit read before ----------------------------


def ico_holding(png_bytes: bytes, size: int) -> bytes:
    """An ICO whose one entry is ``png_bytes`` (ICO stores 256 as 0 in its one-byte sizes)."""
    entry = struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(png_bytes), 22)
    return struct.pack("<HHH", 0, 1, 1) + entry + png_bytes


def test_ico_is_unsupported_and_never_decoded():
    from grit_pipeline.testing import bomb_png

    ico = ico_holding(bomb_png(12_000, 12_000), 0)  # the 445 kB ICO of the issue: 144 Mpx inside
    config = FetchConfig()
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        decode_image(ico, config, make_resizer(config))
    assert caught.value.failure.reason == "unsupported_format"
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "EPS"),
        (b"8BPS\x00\x01" + b"\x00" * 40, "PSD"),
        (ico_holding(png((16, 16)), 16), "ICO"),
    ],
    ids=["eps", "psd", "small-ico"],
)
def test_other_pillow_formats_are_unsupported(data, name):
    config = FetchConfig()
    with pytest.raises(FetchError) as caught:
        decode_image(data, config, make_resizer(config))
    assert caught.value.failure.reason == "unsupported_format" and name in str(caught.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_listed_format_decodes(fmt):
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, fmt)
    config = FetchConfig()
    fetched = decode_image(out.getvalue(), config, make_resizer(config))
    assert (fetched.width, fetched.height) == (64, 48)


def test_a_webp_over_the_pixel_limit_is_refused_from_its_header():
    out = io.BytesIO()
    Image.new("RGB", (400, 300)).save(out, "WEBP", lossless=True)
    config = FetchConfig(max_pixels=100_000)
    with pytest.raises(FetchError) as caught:
        decode_image(out.getvalue(), config, make_resizer(config))
    assert caught.value.failure.reason == "too_many_pixels" and "400x300" in str(caught.value)


# --- 3. hostile checkpoint configs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    corpus = tmp_path_factory.mktemp("ckpt-synth")
    write_synth(str(corpus), 8, seed=1, config=SynthConfig(image_size=32))
    out = tmp_path_factory.mktemp("ckpt-run")
    train(
        TrainConfig(data=str(corpus), out=str(out), max_steps=1, batch_size=4, warmup_steps=1), progress=False
    )
    image = tmp_path_factory.mktemp("ckpt-image") / "a.png"
    image.write_bytes(png())
    return out / "checkpoint-1", image


def hostile_copy(checkpoint, tmp_path, edit) -> Path:
    folder = tmp_path / "hostile"
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    # json.dumps writes inf as Infinity; 1e400 is what a hostile file holds (Python reads it as inf)
    (folder / "config.json").write_text(json.dumps(config).replace("Infinity", "1e400"))
    return folder


def predict_in_a_bounded_process(folder: Path, image: Path) -> subprocess.CompletedProcess:
    """`grit predict` in a child capped at 6 GiB of address space and 60 s, so the code before the fix
    fails this test (MemoryError or timeout) instead of taking the machine."""
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
        "from grit_pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "predict", "--checkpoint", str(folder), "--image", str(image)]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("grit predict was still building the hostile model after 60 s")


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["text_config"].__setitem__("layers", 1_000_000),
        lambda c: c.__setitem__("latent_query_num", 10_000_000),
    ],
    ids=["layers-1e6", "latent-queries-1e7"],
)
def test_huge_checkpoint_configs_are_one_line_before_any_model_is_built(checkpoint, tmp_path, edit):
    folder = hostile_copy(checkpoint[0], tmp_path, edit)
    started = time.monotonic()
    done = predict_in_a_bounded_process(folder, checkpoint[1])
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines[-1].startswith("grit predict: error: checkpoint config")
    assert time.monotonic() - started < 50


@pytest.mark.parametrize("grid", [float("inf"), -3, 10**6, 7.9, True, "32"], ids=str)
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_bad_location_grids_are_one_line_in_predict_and_eval(checkpoint, tmp_path, capsys, grid, command):
    folder = hostile_copy(checkpoint[0], tmp_path, lambda c: c.__setitem__("location_grid", grid))
    if command == "predict":
        argv = ["predict", "--checkpoint", str(folder), "--image", str(checkpoint[1])]
    else:
        argv = ["eval", "--checkpoint", str(folder), "--data", str(checkpoint[0])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "location_grid" in err.strip().splitlines()[-1]


# --- 8. a full disk during the commit; leftovers of a kill -9 -----------------------------------------------


class FullJournalFileSystem(MemoryFileSystem):
    """An in-memory file system whose disk is full for the commit's journal while ``full`` is set.

    A real full disk needs a mounted, filled file system (root); ENOSPC is raised where the
    operating system would raise it, from the open of the journal's temporary file.
    """

    protocol = ("fulljournal",)
    full = True

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("fulljournal://"))

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode and "commit.json" in path and type(self).full:
            raise OSError(28, "No space left on device", path)
        return super()._open(path, mode, **kwargs)


fsspec.register_implementation("fulljournal", FullJournalFileSystem, clobber=True)


def test_a_full_disk_during_the_commit_is_one_line_and_the_next_run_recovers(capsys):
    argv = ["--example", "--output", "fulljournal://out", "--detector", "tiny-random"]
    FullJournalFileSystem.full = True
    try:
        assert run(argv) == 1
    finally:
        FullJournalFileSystem.full = False
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "No space left on device" in line]
    assert len(lines) == 1 and lines[0].startswith("grit build: error: the commit of run")
    assert load_manifest("fulljournal://out") is None  # nothing committed
    assert run([*argv, "--mode", "incremental"]) == 0  # recovers the sealed run, then nothing is left to do
    counts = load_manifest("fulljournal://out")["counts"]
    assert counts["input"] == 5 == counts["accepted"] + counts["rejected"]
    fsspec.filesystem("fulljournal").rm("/out", recursive=True)


def test_recovery_removes_the_temporary_manifest_a_kill_left(tmp_path, monkeypatch):
    plan, items = staged_run(tmp_path, "r1", "in.csv", ["a", "b"], ["c"])
    leftover = tmp_path / f".manifest.json.{uuid.uuid4().hex}.tmp"

    def killed_while_writing_the_manifest(fs, root, journal):
        for source, target in journal["moves"]:
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(source, target)
        leftover.write_text('{"format": ')  # write_json's temporary, cut by kill -9
        raise KeyboardInterrupt("kill -9")

    monkeypatch.setattr(commit_module, "apply_journal", killed_while_writing_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        commit(plan, items)
    monkeypatch.undo()
    recover(str(tmp_path))
    assert load_manifest(str(tmp_path))["counts"]["input"] == 3
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# --- Build item 2: the README's table of reasons is the code's ------------------------------------------------


def readme_reasons() -> dict[str, tuple[str, bool]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- reasons table -->")[1].split("<!-- end of reasons table -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        reason, stage, kind = (cell.strip() for cell in line.strip("|").split("|")[:3])
        assert kind in ("transient", "final"), line
        rows[reason.strip("`")] = (stage, kind == "transient")
    return rows


def test_the_readme_table_of_reasons_is_the_codes():
    assert readme_reasons() == {name: (r.stage, r.transient) for name, r in reasons.REASONS.items()}
    http = {f"http_{c}" for c in reasons.TRANSIENT_HTTP_CODES}
    assert {n for n, r in reasons.REASONS.items() if r.transient} | http == TRANSIENT_REASONS


def _literals(pattern: str, *paths: str) -> set[str]:
    found = set()
    for path in paths:
        for file in sorted(ROOT.glob(path)):
            found |= {m for m in re.findall(pattern, file.read_text(), re.M)}
    return found


def test_every_reason_the_code_raises_is_in_the_table():
    raised = _literals(r'(?:FetchError|RetryLater)\(\s*"([a-z0-9_]+)"', "grit_pipeline/**/*.py")
    raised |= _literals(r'\.reject\(\s*"[a-z]+",\s*"([a-z0-9_]+)"', "beam_jobs/*.py")
    raised |= _literals(r'^[A-Z_]+ = "([a-z0-9_]+)"', "grit_pipeline/inputs/config.py")
    raised |= _literals(r'(?:return|reason =|else) "([a-z0-9_]+)"', "grit_pipeline/text.py")
    raised |= {"no_box_above_threshold", "grounding_error"} & _literals(
        r'= "([a-z_]+)"', "grit_pipeline/grounding/config.py"
    )
    raised |= _literals(r'^UNSUPPORTED_FORMAT = "([a-z_]+)"', "grit_pipeline/fetch/formats.py")
    raised |= _literals(r'^UNEXPECTED_ERROR = "([a-z_]+)"', "schemas/rejects.py")
    raised |= {f"http_{code}" for code in (404, 103, 599)}  # _http_error's f"http_{status}"
    assert len(raised) > 25
    unknown = sorted(r for r in raised if not reasons.is_known(r))
    assert not unknown, f"reasons raised in the code but missing from grit_pipeline/reasons.py: {unknown}"
    unused = sorted(set(reasons.REASONS) - raised - {"http_NNN"})
    assert not unused, f"reasons in the table that no code raises: {unused}"
