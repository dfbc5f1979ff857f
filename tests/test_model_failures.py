"""The trainer and `grit eval` on unusable input: one clear line (exit 2), never a traceback or a fake run."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from grit_pipeline.cli import main
from grit_pipeline.model.synth import SynthConfig, write_synth
from grit_pipeline.model.train import TrainConfig, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth(str(out), 12, seed=1, config=SynthConfig(image_size=32))
    return out


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    train(
        TrainConfig(data=str(corpus), out=str(out), max_steps=2, batch_size=4, warmup_steps=1), progress=False
    )
    return out


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"grit {command}: error: ")
    return last


def _copy_run(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def test_train_refuses_shards_without_images(corpus, tmp_path, capsys):
    table = pq.read_table(next(corpus.glob("*.parquet")))
    index = table.schema.get_field_index("image")
    table = table.set_column(index, table.schema.field(index), pa.nulls(table.num_rows, pa.binary()))
    (tmp_path / "shards").mkdir()
    pq.write_table(table, tmp_path / "shards" / "no-images.parquet")
    code = main(
        ["train", "--data", str(tmp_path / "shards"), "--out", str(tmp_path / "o"), "--max-steps", "2"]
    )
    assert code == 2
    line = _one_line_error(capsys, "train")
    assert (
        "no usable training example" in line and "row has no image bytes: 12" in line and "--images" in line
    )
    assert not list((tmp_path / "o").glob("checkpoint-*"))  # nothing "trained"


def test_resume_with_a_dangling_latest(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    (run / "latest").write_text("checkpoint-99")
    assert main(["train", "--data", "unused", "--out", str(run), "--resume"]) == 2
    assert "'checkpoint-99'" in _one_line_error(capsys, "train")


def test_resume_with_a_truncated_trainer_state(trained, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    state = run / "checkpoint-2" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert main(["train", "--data", "unused", "--out", str(run), "--resume"]) == 2
    assert "trainer_state.pt is truncated or corrupt" in _one_line_error(capsys, "train")


@pytest.mark.parametrize("command", ["eval", "train"])
def test_truncated_weights(command, trained, corpus, tmp_path, capsys):
    run = _copy_run(trained, tmp_path)
    weights = run / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    if command == "eval":
        args = ["eval", "--checkpoint", str(run), "--data", str(corpus)]
    else:
        args = ["train", "--data", str(corpus), "--out", str(run), "--resume"]
    assert main(args) == 2
    assert "truncated or corrupt" in _one_line_error(capsys, command)
