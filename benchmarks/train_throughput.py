"""Training steps per second with the real shard loader vs. the same batches held in memory.

For each preset (tiny and small on CPU), the same model state is trained for the same number of
steps twice: once pulling batches from ``ShardBatches`` (Parquet read, PNG decode, crop, tokenise,
collate; ``--workers`` DataLoader processes), once from a list of those very batches already in
memory. The ratio loader / memory says how much the input pipeline slows training (target >= 0.9).
No GPU here: the GPU part (tokens/s and peak memory for small and kosmos-2 with bf16) runs only
when CUDA is available.

    python benchmarks/train_throughput.py [--steps 30] [--workers 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from itertools import islice

import torch

from grit_pipeline.model.data import ShardBatches, StreamConfig, make_loader
from grit_pipeline.model.examples import TextConfig
from grit_pipeline.model.presets import build_model, get_preset
from grit_pipeline.model.processor import processor_from_corpus
from grit_pipeline.model.synth import SynthConfig, write_synth

CASES = (("tiny", 64, 32), ("small", 4, 224))  # preset, batch size, synthetic image side (pixels)


def timed_steps(model, batches, lr: float = 1e-4) -> float:
    """Steps per second over ``batches`` (an iterable), counted after the first (warm-up) step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    start, steps = None, 0
    for _, batch, _ in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if start is None:
            start = time.perf_counter()
        else:
            steps += 1
    return steps / (time.perf_counter() - start)


def measure(
    preset_name: str, batch_size: int, image_side: int, steps: int, workers: int, rounds: int, root: str
) -> dict:
    """Best-of-``rounds`` steps/s of each source, the two alternating so machine load hits both alike."""
    preset = get_preset(preset_name)
    data = f"{root}/{preset_name}"
    rows = batch_size * (steps + 1)
    write_synth(
        data,
        rows,
        seed=0,
        config=SynthConfig(image_size=image_side, max_aspect=1.3),
        rows_per_shard=max(rows // 4, 1),
    )
    processor = processor_from_corpus(data, preset.image_size, preset.tokenizer_vocab, 10_000)
    model = build_model(preset, processor).train()
    text = TextConfig(location_grid=preset.location_grid)
    stream = StreamConfig(data, batch_size=batch_size, num_workers=workers, shuffle_buffer=256)
    dataset = ShardBatches(stream, text, processor, preset.latent_queries)
    in_memory = list(
        islice(
            iter(
                ShardBatches(
                    StreamConfig(data, batch_size=batch_size, shuffle_buffer=256),
                    text,
                    processor,
                    preset.latent_queries,
                )
            ),
            steps + 1,
        )
    )
    memory_rate = loader_rate = 0.0
    for _ in range(rounds):
        memory_rate = max(memory_rate, timed_steps(copy.deepcopy(model), in_memory))
        loader_rate = max(
            loader_rate, timed_steps(copy.deepcopy(model), islice(make_loader(dataset), steps + 1))
        )
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {
        "preset": preset_name,
        "params_m": params,
        "batch": batch_size,
        "memory": memory_rate,
        "loader": loader_rate,
    }


def gpu_note() -> str:
    if torch.cuda.is_available():
        return (
            "CUDA present: run `grit train --preset small|kosmos-2` with bf16 for tokens/s and peak memory."
        )
    return "no GPU on this machine: tokens/s and peak memory for small / kosmos-2 with bf16 not measured"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=30, help="timed steps per case (tiny; small uses a fifth)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="DataLoader worker processes for the loader run"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating memory/loader rounds, best kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as root:
        for name, batch_size, side in CASES:
            steps = args.steps if name == "tiny" else max(args.steps // 5, 3)
            results.append(measure(name, batch_size, side, steps, args.workers, args.rounds, root))
    print(
        f"\n{'preset':<8} {'params':>8} {'batch':>6} {'memory steps/s':>15} {'loader steps/s':>15} {'ratio':>6}"
    )
    for r in results:
        ratio = r["loader"] / r["memory"]
        print(
            f"{r['preset']:<8} {r['params_m']:>7.1f}M {r['batch']:>6} {r['memory']:>15.3f} {r['loader']:>15.3f} {ratio:>6.2f}"
        )
    print(gpu_note())
    worst = min(r["loader"] / r["memory"] for r in results)
    print(f"RESULT train_throughput_loader_vs_memory_min_ratio {worst:.2f} (target 0.9)")


if __name__ == "__main__":
    main()
