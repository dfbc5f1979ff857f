"""The trainer end to end on a tiny synthetic corpus: checkpoints, exact resume, eval and predict."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from grit_pipeline.cli import main
from grit_pipeline.model.checkpoint import load_training_config, resolve_checkpoint
from grit_pipeline.model.presets import PRESETS, build_config
from grit_pipeline.model.synth import SynthConfig, write_synth
from grit_pipeline.model.train import TrainConfig, lr_factor, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synth(
        str(out / "train"), 48, seed=1, config=SynthConfig(image_size=32, max_aspect=1.3), rows_per_shard=20
    )
    write_synth(str(out / "val"), 8, seed=2, config=SynthConfig(image_size=32))
    return out


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """Five steps of the tiny preset, a checkpoint every third step (all kept)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        data=str(corpus / "train"), out=str(out), max_steps=5, save_every=3, keep_checkpoints=0,
        batch_size=6, warmup_steps=2, lr=1e-3,
    )  # fmt: skip
    return config, train(config, progress=False)


def test_checkpoints_load_with_plain_transformers(run, corpus):
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration, Kosmos2Processor

    config, state = run
    checkpoint = resolve_checkpoint(config.out)
    assert checkpoint.name == "checkpoint-5" and state.step == 5
    model = Kosmos2ForConditionalGeneration.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    assert isinstance(processor, Kosmos2Processor)
    saved = load_training_config(checkpoint)
    assert saved["location_grid"] == PRESETS["tiny"].location_grid and saved["max_steps"] == 5
    # The reloaded pair runs the processor's own inputs, and saving again round-trips the weights.
    image = Image.new("RGB", (40, 32), (10, 200, 10))
    inputs = processor(
        text=["<grounding><phrase>a green square</phrase>"],
        images=[image],
        num_image_tokens=16,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    clone_dir = checkpoint.parent / "clone"
    model.save_pretrained(clone_dir)
    clone = Kosmos2ForConditionalGeneration.from_pretrained(clone_dir).eval()
    with torch.no_grad():
        assert torch.equal(clone(**inputs).logits, logits)
    shutil.rmtree(clone_dir)


def test_resuming_gives_the_same_next_step_loss(run, tmp_path):
    config, uninterrupted = run
    resumed_out = tmp_path / "resumed"
    resumed_out.mkdir()
    shutil.copytree(f"{config.out}/checkpoint-3", resumed_out / "checkpoint-3")
    (resumed_out / "latest").write_text("checkpoint-3")
    resumed = train(
        TrainConfig(data=config.data, out=str(resumed_out), max_steps=5), resume=True, progress=False
    )
    assert resumed.step == 5
    assert resumed.losses == pytest.approx(uninterrupted.losses[3:], abs=1e-6)
    # Control: a fresh run from step 0 does not give the step-4 loss (the check can fail).
    assert uninterrupted.losses[0] != pytest.approx(uninterrupted.losses[3], abs=1e-3)


def test_schedule_warms_up_then_decays_linearly_to_zero():
    factors = [lr_factor(step, 4, 12) for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[8] == 0.5 and factors[12] == 0.0


def test_presets_build_the_paper_shape():
    class Tok:  # only len() and the special ids are read
        pad_token_id, bos_token_id, eos_token_id = 1, 0, 2

        def __len__(self):
            return 65037

    config = build_config(PRESETS["kosmos-2"], Tok())
    assert (config.text_config.embed_dim, config.text_config.layers, config.text_config.ffn_dim) == (
        2048,
        24,
        8192,
    )
    assert (config.vision_config.hidden_size, config.vision_config.patch_size, config.latent_query_num) == (
        1024,
        14,
        64,
    )


def test_eval_and_predict_commands(run, corpus, tmp_path, capsys):
    config, _ = run
    assert main(["eval", "--checkpoint", config.out, "--data", str(corpus / "val"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["expressions"] >= 8 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["loss"], rel=1e-6)
    assert metrics["location_loss"] > 0 and metrics["location_loss_shuffled"] > 0
    image = tmp_path / "in.png"
    Image.new("RGB", (48, 32), (200, 20, 20)).save(image)
    out = tmp_path / "boxes.png"
    code = main(["predict", "--checkpoint", config.out, "--image", str(image), "--out", str(out), "--json",
                 "--prompt", "<grounding><phrase>a red square</phrase>", "--max-new-tokens", "6"])  # fmt: skip
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["raw"].startswith("<grounding><phrase>a red square</phrase>")
    assert Image.open(out).size == (48, 32)


def test_train_command_reports_bad_input(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
