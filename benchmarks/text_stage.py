"""Captions per second through the text stage vs. raw ``nlp.pipe`` (same model, same components).

Both run side by side in this process over the same generated captions, alternating in blocks of
500 captions, best of ``--rounds``, timed in process CPU seconds (the machine is shared, so wall
time is noisy). The text stage adds noun-chunk extraction, the abstract filter, expansion and
containment on top of the parse. Usage: ``python benchmarks/text_stage.py [--n 10000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import random
import time

from grit_pipeline.text import TextConfig, TextStage, load_pipeline

SUBJECTS = [
    "a dog",
    "two children",
    "an old man",
    "a red car",
    "the cat",
    "a woman",
    "a wooden table",
    "three birds",
]
ADJECTIVES = ["small", "bright", "rusty", "happy", "blue", "vintage", "tall", "wet"]
VERBS = [
    "sitting on",
    "running across",
    "parked near",
    "holding",
    "looking at",
    "lying under",
    "standing beside",
]
OBJECTS = [
    "the beach",
    "a bench",
    "a snowy field",
    "an umbrella",
    "the kitchen counter",
    "a busy street",
    "a lake",
]
TAILS = ["at sunset", "in the rain", "with a red ball", "on a sunny day", "", "", "during the festival"]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """Alt-text-like captions of 5 to 20 words, seeded."""
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        subject = rng.choice(SUBJECTS)
        if rng.random() < 0.5:
            subject = subject.replace(" ", f" {rng.choice(ADJECTIVES)} ", 1)
        parts = [subject, rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)]
        if rng.random() < 0.3:
            parts += ["and", rng.choice(SUBJECTS)]
        captions.append(" ".join(p for p in parts if p))
    return captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=int, default=500, help="captions per alternation block")
    args = parser.parse_args()

    captions = make_captions(args.n)
    nlp = load_pipeline()  # the same pipeline object (same components) for both
    stage = TextStage(TextConfig(), nlp=nlp)
    # Alternate the two in blocks so that load from other processes on a shared machine hits both alike.
    block = max(1, min(args.block, args.n))
    raw_times, stage_times, parsed = [0.0] * args.rounds, [0.0] * args.rounds, []
    for round_index in range(args.rounds):
        for offset in range(0, args.n, block):
            chunk = captions[offset : offset + block]
            first_raw = (offset // block + round_index) % 2 == 0
            for which in ("raw", "stage") if first_raw else ("stage", "raw"):
                start = time.process_time()
                if which == "raw":
                    docs = list(nlp.pipe(chunk, batch_size=stage.config.batch_size))
                    raw_times[round_index] += time.process_time() - start
                    assert len(docs) == len(chunk)
                else:
                    result = stage.parse(chunk)
                    stage_times[round_index] += time.process_time() - start
                    if round_index == 0:
                        parsed += result

    raw_cps, stage_cps = args.n / min(raw_times), args.n / min(stage_times)
    kept = sum(len(p.kept_ref_exps) for p in parsed)
    print(
        f"captions: {args.n}, pipeline: {nlp.meta['name']} {nlp.meta['version']}, components: {nlp.pipe_names}"
    )
    print(f"{'run':<22}{'best cpu s':>12}{'captions/s':>14}")
    print(f"{'raw nlp.pipe':<22}{min(raw_times):>12.2f}{raw_cps:>14.0f}")
    print(f"{'text stage':<22}{min(stage_times):>12.2f}{stage_cps:>14.0f}")
    print(f"expressions kept after containment: {kept} ({kept / args.n:.2f} per caption)")
    print(f"RESULT text_stage_vs_raw_spacy {stage_cps / raw_cps:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
