"""Training steps per second with the real shard loader vs. the same batches held in memory.

For each preset (tiny and small on CPU), the same model state is trained for the same number of
steps from three sources, alternating over rounds (best rate of each kept, since the machine is
shared): a list of batches already in memory; ``ShardBatches`` (Parquet read, PNG decode, crop,
tokenise, collate) with ``--workers`` DataLoader processes, whose wall-clock rate over the memory
rate is the target ratio (>= 0.9); and the same loader inline in the training process, whose
CPU-time rate shows what reading costs per step when it is not hidden in workers.
No GPU here: the GPU part (tokens/s and peak memory for small and kosmos-2 with bf16) runs only
when CUDA is available.

    python benchmarks/train_throughput.py [--steps 20] [--rounds 3] [--workers 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from itertools import islice

import torch

from grit_pipeline.model.data import ShardBatches, StreamConfig, make_loader
from grit_pipeline.model.examples import ExampleConfig
from grit_pipeline.model.presets import build_model, get_preset
from grit_pipeline.model.processor import processor_from_corpus
from grit_pipeline.model.synth import SynthConfig, write_synth

CASES = (("tiny", 64, 32), ("small", 4, 224))  # preset, batch size, synthetic image side (pixels)


def timed_steps(model, batches, lr: float = 1e-4) -> tuple[float, float]:
    """(steps per wall second, steps per CPU second of this process) after a first warm-up step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    wall = cpu = None
    steps = 0
    for _, batch, _ in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if wall is None:
            wall, cpu = time.perf_counter(), time.process_time()
        else:
            steps += 1
    return steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu)


def measure(
    preset_name: str, batch_size: int, image_side: int, steps: int, workers: int, rounds: int, root: str
) -> dict:
    """Best-of-``rounds`` (wall, CPU) rates of the three sources for one preset."""
    preset = get_preset(preset_name)
    data = f"{root}/{preset_name}"
    rows = batch_size * (steps + 1)
    synth = SynthConfig(image_size=image_side, max_aspect=1.3)
    write_synth(data, rows, seed=0, config=synth, rows_per_shard=max(rows // 4, 1))
    processor = processor_from_corpus(
        data, preset.image_size, preset.tokenizer_vocab, 10_000, preset.latent_queries
    )
    model = build_model(preset, processor).train()
    text = ExampleConfig(location_grid=preset.location_grid)

    def loader(num_workers: int):
        stream = StreamConfig(data, batch_size=batch_size, num_workers=num_workers, shuffle_buffer=256)
        return islice(make_loader(ShardBatches(stream, text, processor, preset.latent_queries)), steps + 1)

    in_memory = list(loader(0))
    sources = {"memory": lambda: in_memory, "loader": lambda: loader(workers), "inline": lambda: loader(0)}
    best = dict.fromkeys(sources, (0.0, 0.0))
    for _ in range(rounds):
        for name, source in sources.items():
            rates = timed_steps(copy.deepcopy(model), source())
            best[name] = (max(best[name][0], rates[0]), max(best[name][1], rates[1]))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"preset": preset_name, "params_m": params, "batch": batch_size, **best}


def gpu_note() -> str:
    if torch.cuda.is_available():
        return (
            "CUDA present: run `grit train --preset small|kosmos-2` with bf16 for tokens/s and peak memory."
        )
    return "no GPU on this machine: tokens/s and peak memory for small / kosmos-2 with bf16 not measured"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (tiny; small uses a fifth)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, best rate kept")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes for the loader run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as root:
        for name, batch_size, side in CASES:
            steps = args.steps if name == "tiny" else max(args.steps // 5, 3)
            results.append(measure(name, batch_size, side, steps, args.workers, args.rounds, root))
    print(
        f"\n{'preset':<7} {'params':>7} {'batch':>5} {'memory/s':>9} {'loader/s':>9} {'wall ratio':>10}",
        end="",
    )
    print(f" {'memory/cpu-s':>12} {'inline/cpu-s':>12} {'cpu ratio':>9}")
    for r in results:
        memory, loader, inline = r["memory"], r["loader"], r["inline"]
        print(
            f"{r['preset']:<7} {r['params_m']:>6.1f}M {r['batch']:>5} {memory[0]:>9.3f} {loader[0]:>9.3f}",
            end="",
        )
        print(
            f" {loader[0] / memory[0]:>10.2f} {memory[1]:>12.3f} {inline[1]:>12.3f} {inline[1] / memory[1]:>9.2f}"
        )
    print(gpu_note())
    worst = min(r["loader"][0] / r["memory"][0] for r in results)
    print(f"RESULT train_throughput_loader_vs_memory_min_ratio {worst:.2f} (target 0.9)")


if __name__ == "__main__":
    main()
