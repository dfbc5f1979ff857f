"""`grit eval --benchmark`: zero-shot phrase grounding and referring expressions, as Kosmos-2 reports them.

- ``flickr30k-entities``: R@1 over every boxed phrase of every sentence of the split; the prompt is
  ``<grounding>`` + the sentence up to the phrase + a space + ``<phrase>PHRASE</phrase>`` (the
  original ``cook_data.py`` writes ``f"{prefix_caption} <phrase>{phrase}</phrase>"``, so a space
  even before a phrase that starts the sentence); a hit when the first box generated for the phrase
  anywhere in the generated text has IoU >= 0.5 with any of
  the phrase's boxes (``any-box``, MDETR's ``separateGT`` evaluation, which Kosmos-2 used), or with
  their union (``--protocol merged-box``).
- ``refcoco``, ``refcoco+``, ``refcocog``: accuracy at IoU >= 0.5 per split; the prompt is
  ``<grounding><phrase>EXPRESSION</phrase>``.

Writes ``OUT/predictions.jsonl`` (one line per query), ``OUT/metrics.json`` and
``OUT/worst_misses.png`` (the misses with the lowest IoU, true boxes green, predicted red).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from grit_pipeline.evalsets import flickr30k, refcoco
from grit_pipeline.evalsets.intervals import wilson_interval
from grit_pipeline.locations import Box
from grit_pipeline.model.referring import GenerationConfig, Prediction, Query, answer

BENCHMARKS: dict[str, tuple[str, ...]] = {
    "flickr30k-entities": ("val", "test"),
    **{name: splits for name, (_, splits) in refcoco.DATASETS.items()},
}
PROTOCOLS = ("any-box", "merged-box")
TRUE_COLOUR, PREDICTED_COLOUR = (44, 160, 44), (214, 39, 40)
MISSES_SHOWN = 12


def union(boxes: tuple[Box, ...]) -> Box:
    """The smallest box holding all ``boxes`` (Flickr30k's merged-box protocol)."""
    return Box(
        min(b.x_min for b in boxes),
        min(b.y_min for b in boxes),
        max(b.x_max for b in boxes),
        max(b.y_max for b in boxes),
    )


def flickr_queries(data: str, split: str, images: str | None, protocol: str) -> list[Query]:
    """One query per boxed phrase of every sentence, the sentence before it as context."""
    queries = []
    for sentence in flickr30k.read_split(data, split, images):
        for phrase in sentence.phrases:
            if not phrase.boxes:  # nobndbox, scene, notvisual: not evaluated
                continue
            truth = (union(phrase.boxes),) if protocol == "merged-box" else phrase.boxes
            key = f"{sentence.image_id}:{sentence.index}:{phrase.phrase_id}"
            context = f"{sentence.text[: phrase.start]} "  # the original's spacing (cook_data.py)
            queries.append(Query(key, sentence.image_path, context, phrase.text, truth))
    return queries


def benchmark_queries(
    benchmark: str, data: str, split: str, images: str | None, protocol: str
) -> list[Query]:
    if benchmark == "flickr30k-entities":
        return flickr_queries(data, split, images, protocol)
    folder = Path(images) if images else Path(data) / "train2014"
    expressions = refcoco.read_split(data, benchmark, split, folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: pass --images with the COCO train2014 images folder")
    return [Query(e.key, e.image_path, "", e.text, (e.box,)) for e in expressions]


def split_metrics(predictions: list[Prediction]) -> dict:
    hits = sum(p.hit for p in predictions)
    return {
        "accuracy": hits / len(predictions) if predictions else 0.0,
        "hits": hits,
        "queries": len(predictions),
        "ci95": list(wilson_interval(hits, len(predictions))),
    }


def worst_misses(queries: list[Query], predictions: list[Prediction], shown: int = MISSES_SHOWN):
    """A contact sheet of the misses with the lowest IoU (None when there is no miss)."""
    from grit_pipeline.model.images import decode_image
    from grit_pipeline.shards.drawing import Phrase, annotate
    from grit_pipeline.shards.gallery import contact_sheet

    misses = sorted((p.iou, i) for i, p in enumerate(predictions) if not p.hit)[:shown]
    tiles = []
    for iou, i in misses:
        query, prediction = queries[i], predictions[i]
        data = query.image if isinstance(query.image, bytes) else Path(query.image).read_bytes()
        phrases = [Phrase("true: " + query.phrase, 0, 0, query.truth, (), TRUE_COLOUR)]
        if prediction.box is not None:
            phrases.append(Phrase("predicted", 0, 0, (Box(*prediction.box),), (), PREDICTED_COLOUR))
        label = f"{query.key}  IoU {iou:.2f}  {query.context}[{query.phrase}]"
        tiles.append(annotate(decode_image(data), phrases, label, size=320))
    return contact_sheet(tiles) if tiles else None


def write_outputs(out: Path, queries: list[Query], predictions: list[Prediction], metrics: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w") as handle:
        for query, prediction in zip(queries, predictions):
            record = {
                **asdict(prediction),
                "truth": [b.as_tuple() for b in query.truth],
                "prompt": query.prompt,
            }
            handle.write(json.dumps(record) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    sheet = worst_misses(queries, predictions)
    if sheet is not None:
        sheet.save(out / "worst_misses.png")


def collect_queries(args) -> dict[str, list[Query]]:
    """The queries of every requested split (first ``--limit`` of each), read before any model loads."""
    splits = args.split or BENCHMARKS[args.benchmark]
    unknown = [s for s in splits if s not in BENCHMARKS[args.benchmark]]
    if unknown:
        raise ValueError(
            f"{args.benchmark} has the splits {', '.join(BENCHMARKS[args.benchmark])}, not {unknown}"
        )
    by_split = {}
    for split in splits:
        queries = benchmark_queries(args.benchmark, args.data, split, args.images, args.protocol)
        if not queries:
            raise ValueError(f"no queries in {args.benchmark} {split} under {args.data}")
        by_split[split] = queries[: args.limit] if args.limit else queries
    return by_split


def run_benchmark(args, queries_by_split: dict[str, list[Query]], model, processor, grid: int) -> dict:
    """Metrics per split; predictions and pictures under ``args.out``."""
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    flickr = args.benchmark == "flickr30k-entities"
    metrics = {
        "benchmark": args.benchmark,
        "checkpoint": str(args.checkpoint),
        "protocol": args.protocol if flickr else "accuracy@0.5",
        "metric": "R@1" if flickr else "accuracy",
        "interval": "Wilson score, 95 %",
        "location_grid": grid,
        "generation": asdict(generation),
        "splits": {},
    }
    for split, queries in queries_by_split.items():
        with tqdm(total=len(queries), desc=f"{args.benchmark} {split}", disable=args.json) as bar:
            predictions = answer(model, processor, queries, grid, generation, bar)
        metrics["splits"][split] = split_metrics(predictions)
        write_outputs(Path(args.out) / split, queries, predictions, metrics["splits"][split])
    return metrics


def table(metrics: dict) -> str:
    lines = [f"{metrics['benchmark']} ({metrics['metric']}, {metrics['protocol']}, 95 % Wilson interval)"]
    for split, m in metrics["splits"].items():
        low, high = m["ci95"]
        lines.append(f"  {split:<6} {m['accuracy']:.4f}  [{low:.4f}, {high:.4f}]  {m['hits']}/{m['queries']}")
    return "\n".join(lines)
