"""The trainer end to end on a tiny synthetic corpus: checkpoints, exact resume, eval and predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from grit_pipeline.cli import main
from grit_pipeline.model.checkpoint import load_training_config, resolve_checkpoint
from grit_pipeline.model.presets import PRESETS, kosmos2_config
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
        text=["<grounding><phrase>a green square</phrase>"], images=[image], return_tensors="pt"
    )  # the standard call: as many image slots as the model has latent queries
    with torch.no_grad():
        logits = model(**inputs).logits
    clone_dir = checkpoint.parent / "clone"
    model.save_pretrained(clone_dir)
    clone = Kosmos2ForConditionalGeneration.from_pretrained(clone_dir).eval()
    with torch.no_grad():
        assert torch.equal(clone(**inputs).logits, logits)
    shutil.rmtree(clone_dir)


def readme_snippet() -> str:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    marker = "<!-- plain-transformers snippet"
    return readme[readme.index(marker) :].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_snippet_runs_a_checkpoint_with_plain_transformers(run, tmp_path, capsys):
    """The README's code, verbatim but for the paths: the processor's own call, boxes on the tiny grid."""
    from grit_pipeline.locations import parse_grounded_caption

    config, _ = run
    Image.new("RGB", (32, 32), (200, 20, 20)).save(tmp_path / "img.png")
    # A prompt holding one grounded phrase: its box must decode on the checkpoint's grid (P = 8).
    grounded = "<grounding><phrase>a red circle</phrase><object><patch_index_0009><patch_index_0018></object>"
    code = readme_snippet()
    assert 'prompt = "<grounding><phrase>a red circle</phrase>"' in code
    code = code.replace("run/checkpoint-6000", str(resolve_checkpoint(config.out)))
    code = code.replace("img.png", str(tmp_path / "img.png"))
    code = code.replace('prompt = "<grounding><phrase>a red circle</phrase>"', f"prompt = {grounded!r}")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["grid"] == 8
    assert (
        namespace["inputs"]["image_embeds_position_mask"].sum() == namespace["model"].config.latent_query_num
    )
    # cells 9 and 18 of an 8 x 8 grid: (1, 1) and (2, 2), centres 1.5/8 and 2.5/8
    assert namespace["entities"][0] == ("a red circle", (0, 12), [(0.1875, 0.1875, 0.3125, 0.3125)])
    assert namespace["entities"] == parse_grounded_caption(namespace["text"].split("</image>")[-1], 8)[1]
    assert capsys.readouterr().out.startswith("a red circle")


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

    config = kosmos2_config(PRESETS["kosmos-2"], Tok())
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


def test_eval_accuracy_matches_hand_counted_hits(run):
    """Accuracy through the real model and generation loop, its answer fixed by constraining decoding.

    A 5-step model generates no boxes, so the continuation is constrained (``prefix_allowed_tokens_fn``,
    the real generate loop) to one known box; accuracy is then known by hand: 3 of 4 true boxes are it.
    """
    from transformers import Kosmos2ForConditionalGeneration

    from grit_pipeline.locations import Box
    from grit_pipeline.model.evaluate import grounding_accuracy, load_checkpoint
    from grit_pipeline.model.referring import Query

    config, _ = run
    model, processor, grid = load_checkpoint(config.out)
    tokens = ["<object>", "<patch_index_0009>", "<patch_index_0018>", "</object>"]
    script = processor.tokenizer.convert_tokens_to_ids(tokens)

    class Constrained(Kosmos2ForConditionalGeneration):
        def generate(self, *args, **kwargs):
            start = kwargs["input_ids"].shape[1]

            def allowed(_, ids):
                step = len(ids) - start
                return [script[step]] if step < len(script) else [processor.tokenizer.eos_token_id]

            return super().generate(*args, prefix_allowed_tokens_fn=allowed, **kwargs)

    model.__class__ = Constrained
    png = _png_bytes()
    answer_box = Box(0.1875, 0.1875, 0.3125, 0.3125)  # cells 9 and 18 of P = 8, at their centres
    near = Box(0.1875, 0.1875, 0.3125, 0.40)  # IoU 0.015625 / 0.0265625 = 0.59: a hit
    far = Box(0.6, 0.6, 0.9, 0.9)
    items = [
        Query("a", png, "", "a red circle", (answer_box,)),
        Query("b", png, "", "a blue square", (far, near)),  # any true box counts
        Query("c", png, "", "a green circle", (answer_box,)),
        Query("d", png, "", "a red square", (far,)),
    ]
    assert grid == 8
    metrics = grounding_accuracy(model, processor, items, grid)
    assert metrics["accuracy"] == 0.75 and metrics["expressions"] == 4
    assert metrics["baseline_whole_image"] == 0.0


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()
