"""`grit audit`: box precision/recall and text-stage phrase recall of the build on Flickr30k Entities.

Writes ``OUT/audit.json``, ``OUT/audit.txt`` (the table printed) and ``OUT/pr_curve.png``.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from grit_pipeline.audit import DEFAULT_THRESHOLDS
from grit_pipeline.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grit_pipeline.grounding import DEFAULT_DETECTOR, DetectorConfig

    parser.add_argument(
        "--data", required=True, help="Flickr30k Entities folder (Sentences/, Annotations/, val.txt)"
    )
    parser.add_argument("--images", default=None, help="its images (default DATA/flickr30k-images)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=None, help="first N sentences of the split")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, help="as grit build --detector")
    parser.add_argument("--detector-backend", choices=("hf", "groundingdino"), default="hf")
    parser.add_argument(
        "--box-threshold",
        type=float,
        default=DetectorConfig.box_threshold,
        help="the build's threshold (marked)",
    )
    parser.add_argument("--nms-iou", type=float, default=DetectorConfig.nms_iou)
    parser.add_argument("--detector-batch-size", type=int, default=DetectorConfig.batch_size)
    parser.add_argument("--device", default=DetectorConfig.device)
    parser.add_argument("--spacy-model", default=None, help="as grit build --spacy-model")
    parser.add_argument(
        "--thresholds", default=",".join(map(str, DEFAULT_THRESHOLDS)), help="score thresholds of the sweep"
    )
    parser.add_argument("--out", default="audit", help="folder for audit.json, audit.txt, pr_curve.png")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def thresholds_of(text: str, build_threshold: float) -> tuple[float, ...]:
    try:
        values = {float(v) for v in text.split(",") if v.strip()}
    except ValueError as err:
        raise ValueError(f"--thresholds takes comma-separated numbers, got {text!r}") from err
    if not values or not all(0.0 <= v < 1.0 for v in values):
        raise ValueError(f"--thresholds must be numbers in [0, 1), got {text!r}")
    return tuple(sorted(values | {build_threshold}))


def build_image_loader():
    """sentence -> the PIL image `grit build` grounds: the fetch stage's decode of the file's bytes."""
    from PIL import Image

    from grit_pipeline.fetch import FetchConfig, decode_image, make_resizer

    config = FetchConfig()
    resizer = make_resizer(config)

    def load(sentence):
        fetched = decode_image(Path(sentence.image_path).read_bytes(), config, resizer)
        return Image.open(io.BytesIO(fetched.image)).convert("RGB")

    return load


def table(report: dict, build_threshold: float) -> str:
    lines = [
        f"text stage: phrase recall over {report['human_phrases_with_boxes']} human phrases with boxes "
        f"({report['sentences']} sentences), 95 % Wilson intervals",
    ]
    for name, rate in report["text_stage_phrase_recall"].items():
        low, high = rate["ci95"]
        lines.append(
            f"  {name:<20} {rate['value']:.3f} [{low:.3f}, {high:.3f}]  {rate['hits']}/{rate['total']}"
        )
    lines.append(f"boxes at IoU >= {report['iou_threshold']}: {report['human_boxes']} human boxes")
    lines.append("  threshold  boxes  unjudged  precision [95 % CI]        recall [95 % CI]")
    for row in report["boxes"]:
        p, r = row["precision"], row["recall"]
        mark = "  <- --box-threshold" if abs(row["threshold"] - build_threshold) < 1e-9 else ""
        lines.append(
            f"  {row['threshold']:>9.2f}  {row['boxes']:>5}  {row['unjudged']:>8}  "
            f"{p['value']:.3f} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]  "
            f"{r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]{mark}"
        )
    return "\n".join(lines)


def plot(report: dict, build_threshold: float, path: Path) -> None:
    """Precision against recall, one point per threshold, 95 % intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["boxes"]
    recall = [r["recall"]["value"] for r in rows]
    precision = [r["precision"]["value"] for r in rows]
    xerr = [
        [v - r["recall"]["ci95"][0] for v, r in zip(recall, rows)],
        [r["recall"]["ci95"][1] - v for v, r in zip(recall, rows)],
    ]
    yerr = [
        [v - r["precision"]["ci95"][0] for v, r in zip(precision, rows)],
        [r["precision"]["ci95"][1] - v for v, r in zip(precision, rows)],
    ]
    figure, axes = plt.subplots(figsize=(6, 5))
    axes.errorbar(
        recall, precision, xerr=xerr, yerr=yerr, fmt="o-", capsize=2, color="tab:blue", ecolor="0.7"
    )
    for row, x, y in zip(rows, recall, precision):
        chosen = abs(row["threshold"] - build_threshold) < 1e-9
        axes.annotate(f"{row['threshold']:.2f}", (x, y), fontsize=7, color="tab:red" if chosen else "0.3")
    axes.set(
        xlabel="box recall (IoU >= 0.5)", ylabel="box precision (IoU >= 0.5)", xlim=(0, 1.02), ylim=(0, 1.02)
    )
    axes.set_title(
        f"grit audit: {report['human_boxes']} human boxes, threshold in red = --box-threshold", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from tqdm import tqdm

    from grit_pipeline.audit import audit
    from grit_pipeline.benchmarks.flickr30k import read_split
    from grit_pipeline.grounding import DetectorConfig, DetectorUnavailableError, load_detector
    from grit_pipeline.text import PipelineNotFoundError, TextConfig, TextStage

    try:
        thresholds = thresholds_of(args.thresholds, args.box_threshold)
        sentences = read_split(args.data, args.split, args.images)[: args.limit]
        if not sentences:
            raise ValueError(f"no sentences in the {args.split} split under {args.data}")
        config = DetectorConfig(
            model=args.detector, backend=args.detector_backend, box_threshold=min(thresholds),
            nms_iou=args.nms_iou, batch_size=args.detector_batch_size, device=args.device,
        )  # fmt: skip
        text_stage = TextStage(TextConfig(spacy_model=args.spacy_model))
        detector = load_detector(config)
        with tqdm(total=len(sentences), desc="audit", disable=args.json) as bar:
            report = audit(sentences, text_stage, detector, config, build_image_loader(), thresholds, bar)
    except (FileNotFoundError, ValueError, OSError, DetectorUnavailableError, PipelineNotFoundError) as err:
        raise CommandError(str(err)) from err
    report = {
        **report,
        "detector": asdict(config) | {"box_threshold_of_build": args.box_threshold},
        "split": args.split,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(report, args.box_threshold)
    (out / "audit.json").write_text(json.dumps(report, indent=2))
    (out / "audit.txt").write_text(text + "\n")
    plot(report, args.box_threshold, out / "pr_curve.png")
    print(json.dumps(report) if args.json else text)
    return 0
