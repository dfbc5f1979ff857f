"""`grit train`: train or fine-tune Kosmos-2 on shards, read top to bottom.

Build the processor and the model, then the data stream, then AdamW with warm-up and linear
decay, then the loop: step (with gradient accumulation, clipping and bf16 autocast on GPU), log
(tqdm and TensorBoard), checkpoint every ``save_every`` steps. ``--resume`` continues from
``OUT/latest`` exactly: weights, optimizer, scheduler, position in the data stream and RNG states.

Multi-GPU: launch with torchrun, which sets RANK/WORLD_SIZE/LOCAL_RANK; each rank reads every
``world``-th batch of the same stream and gradients are averaged by DistributedDataParallel::

    torchrun --nproc_per_node 8 -m grit_pipeline.cli train --data shards/ --out run/ --preset small
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from grit_pipeline.flags import flag, flag_error, require_choice, require_min, require_positive
from grit_pipeline.model.checkpoint import (
    load_trainer_state,
    load_training_config,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from grit_pipeline.model.config_bounds import bounded_config
from grit_pipeline.model.data import ShardBatches, StreamConfig, make_loader, require_usable_row
from grit_pipeline.model.distributed import Dist, init_distributed, wrap
from grit_pipeline.model.examples import MAX_LOCATION_GRID, ExampleConfig
from grit_pipeline.model.monitor import Monitor
from grit_pipeline.model.presets import PRESETS, build_model, get_preset


@dataclass(frozen=True, kw_only=True)
class TrainConfig(ExampleConfig):
    """Everything a run depends on; saved beside every checkpoint (as one flat JSON object).

    The example fields (``p_grounded`` .. ``max_length``) are ``ExampleConfig``'s, inherited rather
    than repeated; ``location_grid`` None is the preset's (32 for pretrained models). Every field
    but ``beta1``, ``beta2`` and ``eps`` (the paper's values) is a `grit train` flag.
    """

    data: str = flag(help="shard file, folder or glob (ours or GRIT-20M)")
    out: str = flag(help="output folder: checkpoints, tensorboard/")
    preset: str = flag("tiny", choices=sorted(PRESETS), help="model size when not --init-from")
    init_from: str | None = flag(
        None,
        help="pretrained folder or hub id (microsoft/kosmos-2-patch14-224 layout); its processor is reused",
    )
    images: str | None = flag(None, help="img2dataset 'files' folder for shards without image bytes")
    max_steps: int = flag(1000, help="optimizer steps; the linear decay reaches 0 here")
    max_minutes: float | None = flag(None, help="stop early (and checkpoint) after this much wall time")
    batch_size: int = flag(32, help="rows per micro-batch and rank")
    grad_accum: int = flag(1, help="micro-batches per optimizer step")
    lr: float = flag(1e-3, help="peak learning rate")
    warmup_steps: int = flag(100, help="linear warm-up steps (the paper: 375 of 60k)")
    weight_decay: float = flag(0.01, help="AdamW weight decay (matrices only)")
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    clip_norm: float = flag(2.0, help="gradient norm clip (the paper's)")
    save_every: int = flag(500, help="steps between checkpoints")
    keep_checkpoints: int = flag(2, help="newest checkpoints kept (0: all)")
    log_every: int = flag(10, help="steps between progress-bar loss updates")
    seed: int = flag(0, help="seed of the model's initialisation and the data order")
    num_workers: int = flag(0, help="DataLoader worker processes")
    shuffle_buffer: int = flag(2048, help="rows mixed across shard boundaries")
    tokenizer_rows: int = flag(200_000, help="captions used to train a tokenizer when none is given")
    location_grid: int | None = flag(None, help="P: P x P location cells (default: the preset's)")
    bf16: bool = flag(True, help="GPU: train in float32, not bf16 autocast (CPU always runs float32)")

    def __post_init__(self) -> None:
        # The example fields' checks are ExampleConfig's; a grid of None (the preset's) passes them.
        self.text_config(MAX_LOCATION_GRID if self.location_grid is None else self.location_grid)
        require_choice(self, preset=PRESETS)
        require_min(
            self, max_steps=1, batch_size=1, grad_accum=1, save_every=1, log_every=1, tokenizer_rows=1
        )
        require_min(self, warmup_steps=0, keep_checkpoints=0, num_workers=0, shuffle_buffer=0, weight_decay=0)
        require_positive(self, "max_minutes", "lr", "clip_norm", "eps")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise flag_error(self, name, "must be in [0, 1)")

    def text_config(self, grid: int) -> ExampleConfig:
        """The example options of this run, with location grid ``grid``."""
        return ExampleConfig(
            **{f.name: getattr(self, f.name) for f in fields(ExampleConfig)} | {"location_grid": grid}
        )


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def build_processor_and_model(config: TrainConfig):
    """(processor, model, location grid) for a fresh run: pretrained, or the preset from scratch."""
    from grit_pipeline.model.processor import load_processor, processor_from_corpus

    if config.init_from:
        from transformers import Kosmos2ForConditionalGeneration

        processor = load_processor(config.init_from)
        model = Kosmos2ForConditionalGeneration.from_pretrained(
            config.init_from, config=bounded_config(config.init_from, Path(config.init_from).exists())
        )
        # A checkpoint of ours carries its grid; the released model uses Kosmos-2's P = 32.
        saved = load_training_config(Path(config.init_from)) if Path(config.init_from).is_dir() else {}
        return processor, model, config.location_grid or saved.get("location_grid") or 32
    preset = get_preset(config.preset)
    processor = processor_from_corpus(
        config.data, preset.image_size, preset.tokenizer_vocab, config.tokenizer_rows, preset.latent_queries
    )
    model = build_model(
        replace(preset, location_grid=config.location_grid or preset.location_grid), processor, config.seed
    )
    return processor, model, config.location_grid or preset.location_grid


@dataclass
class RunState:
    step: int = 0
    next_batch: int = 0  # global batch index of the data stream to read next
    losses: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # unusable rows by reason


def restore(config: TrainConfig):
    """(config, processor, model, trainer state) from ``OUT/latest``; the saved config wins except for the stop."""
    from transformers import Kosmos2ForConditionalGeneration

    from grit_pipeline.model.processor import load_processor

    checkpoint = resolve_checkpoint(config.out)
    saved = TrainConfig(**load_training_config(checkpoint))
    saved = replace(saved, out=config.out, max_steps=config.max_steps, max_minutes=config.max_minutes)
    state = load_trainer_state(checkpoint)
    bounded = bounded_config(checkpoint, True)  # before anything is built from it
    try:
        model = Kosmos2ForConditionalGeneration.from_pretrained(checkpoint, config=bounded)
    except Exception as err:  # a truncated weights file raises the safetensors reader's own errors
        raise ValueError(f"cannot load the weights of {checkpoint} (truncated or corrupt?): {err}") from err
    return saved, load_processor(str(checkpoint)), model, state


def make_optimizer(model, config: TrainConfig):
    """AdamW (weight decay on matrices only, as usual for transformers) and the warm-up/decay schedule."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, config.max_steps)
    )
    return optimizer, scheduler


def make_batches(config: TrainConfig, dist: Dist, processor, num_slots: int, next_batch: int):
    """Rank r reads global batches r, r + world, ... from ``next_batch`` on."""
    stream = StreamConfig(
        data=config.data,
        images=config.images,
        batch_size=config.batch_size,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
        num_workers=config.num_workers,
        rank=dist.rank,
        world_size=dist.world,
    )
    text = config.text_config(config.location_grid)
    return iter(make_loader(ShardBatches(stream, text, processor, num_slots, next_batch)))


def accumulate(
    model, batches, config: TrainConfig, dist: Dist, state: RunState, autocast
) -> tuple[float, int]:
    """Forward and backward over ``grad_accum`` micro-batches; returns (loss, samples)."""
    loss_sum, samples = 0.0, 0
    for micro in range(config.grad_accum):
        index, batch, skipped = next(batches)
        state.next_batch = index + dist.world  # this rank's next batch, in global numbering
        for reason, n in skipped.items():
            state.skipped[reason] = state.skipped.get(reason, 0) + n
        if batch is None:
            continue
        batch = {k: v.to(dist.device(), non_blocking=True) for k, v in batch.items()}
        # DDP averages gradients on the last micro-batch only.
        sync = micro == config.grad_accum - 1 or dist.world == 1
        with contextlib.nullcontext() if sync else model.no_sync(), autocast:
            loss = model(**batch).loss / config.grad_accum
        loss.backward()
        loss_sum += loss.item()
        samples += batch["input_ids"].shape[0]
    return loss_sum, samples


def train(
    config: TrainConfig, resume: bool = False, progress: bool = True, stop_at: int | None = None
) -> RunState:
    """Run training; returns the final step and the per-step losses of this invocation.

    ``stop_at`` pauses (with a checkpoint) at that step without changing the schedule, which is
    set by ``max_steps``; resuming continues it, e.g. to evaluate along a learning curve.
    """
    dist = init_distributed()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state = RunState()

    # 1. processor and model (from the latest checkpoint when resuming)
    if resume:
        config, processor, model, saved_state = restore(config)
    else:
        processor, model, grid = build_processor_and_model(config)
        config = replace(config, location_grid=grid)
        model.config.location_grid = grid  # in config.json too, for users of plain transformers
    model.to(dist.device()).train()

    # 2. optimizer and schedule
    optimizer, scheduler = make_optimizer(model, config)
    if resume:
        optimizer.load_state_dict(saved_state["optimizer"])
        scheduler.load_state_dict(saved_state["scheduler"])
        state.step, state.next_batch = saved_state["step"], saved_state["next_batch"]
        set_rng_state(saved_state["rng"])
    raw_model, model = model, wrap(model, dist)

    # 3. data (refused when not one row can become an example, rather than "training" on nothing)
    require_usable_row(config, processor, raw_model.config.latent_query_num)
    batches = make_batches(config, dist, processor, raw_model.config.latent_query_num, state.next_batch)

    # 4. the loop
    monitor = Monitor(out, config.max_steps, state.step, config.log_every, progress, dist.main)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dist.device().type == "cuda" and config.bf16
        else contextlib.nullcontext()
    )
    start, stop = time.time(), min(config.max_steps, stop_at or config.max_steps)
    while state.step < stop:
        loss, samples = accumulate(model, batches, config, dist, state, autocast)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.losses.append(loss)
        if dist.main:
            monitor.step(state.step, loss, float(grad_norm), scheduler.get_last_lr()[0], samples)
        out_of_time = config.max_minutes is not None and time.time() - start > config.max_minutes * 60
        done = state.step >= stop or out_of_time
        if dist.main and (state.step % config.save_every == 0 or done):
            trainer_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": state.step,
                "next_batch": state.next_batch,  # rank 0's next global batch; rank r resumes at it + r
            }
            save_checkpoint(
                out, state.step, raw_model, processor, config, trainer_state, config.keep_checkpoints
            )
        if done:
            break
    monitor.close()
    if state.skipped and dist.main:
        print(f"skipped rows by reason: {state.skipped}")
    return state
