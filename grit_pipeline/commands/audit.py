"""`grit audit`: box precision/recall and text-stage phrase recall of the build on Flickr30k Entities.

Writes ``OUT/audit.json``, ``OUT/audit.txt`` (the table printed) and ``OUT/pr_curve.png``. The
detector and text flags are the build's (``DetectorConfig``'s and ``TextConfig``'s declarations).
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from grit_pipeline.audit import DEFAULT_THRESHOLDS
from grit_pipeline.errors import CommandError
from grit_pipeline.flags import add_flags, flag, flag_error, from_flags, require_min
from grit_pipeline.grounding.config import DetectorConfig
from grit_pipeline.text import TextConfig

SPLITS = ("train", "val", "test")
# DetectorConfig fields without a flag here: images read from files, in this process.
UNUSED_HERE = ("image_source", "threads")


@dataclass(frozen=True)
class AuditConfig:
    """What `grit audit` measures: a Flickr30k Entities split through the build's detector and text stage."""

    data: str = flag(help="Flickr30k Entities folder (Sentences/, Annotations/, val.txt)")
    images: str | None = flag(None, help="its images (default DATA/flickr30k-images)")
    split: str = flag("val", choices=SPLITS, help="the split audited")
    limit: int | None = flag(None, metavar="N", help="first N sentences of the split")
    thresholds: tuple[float, ...] = flag(
        DEFAULT_THRESHOLDS,
        sep=",",
        help="score thresholds of the sweep, comma-separated (default 0.05 to 0.95 in steps of 0.05); "
        "--box-threshold joins them",
    )
    out: str = flag("audit", help="folder for audit.json, audit.txt, pr_curve.png")
    detector: DetectorConfig = field(default_factory=DetectorConfig)  # the build's: its threshold is marked
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        if not self.thresholds or not all(0.0 <= t < 1.0 for t in self.thresholds):
            raise flag_error(self, "thresholds", "must be numbers in [0, 1)")
        require_min(self, limit=1)

    @property
    def sweep(self) -> tuple[float, ...]:
        """The thresholds with the build's own, sorted."""
        return tuple(sorted({*self.thresholds, self.detector.box_threshold}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, AuditConfig)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    add_flags(parser.add_argument_group("grounding (as grit build's)"), DetectorConfig, skip=UNUSED_HERE)
    add_flags(parser.add_argument_group("text (as grit build's)"), TextConfig)


def audit_config(args: argparse.Namespace) -> AuditConfig:
    """The audit's config; CommandError (one line naming the flag) on a bad value."""
    try:
        return from_flags(
            AuditConfig, args, detector=from_flags(DetectorConfig, args), text=from_flags(TextConfig, args)
        )
    except ValueError as err:
        raise CommandError(str(err)) from err


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
    from tqdm import tqdm

    from grit_pipeline.audit import audit
    from grit_pipeline.evalsets.flickr30k import read_split
    from grit_pipeline.grounding import DetectorUnavailableError, load_detector
    from grit_pipeline.text import PipelineNotFoundError, TextStage

    config = audit_config(args)
    threshold, sweep = config.detector.box_threshold, config.sweep
    detector_config = replace(config.detector, box_threshold=min(sweep))  # one run at the sweep's lowest
    try:
        sentences = read_split(config.data, config.split, config.images)[: config.limit]
        if not sentences:
            raise ValueError(f"no sentences in the {config.split} split under {config.data}")
        text_stage = TextStage(config.text)
        detector = load_detector(detector_config)
        with tqdm(total=len(sentences), desc="audit", disable=args.json) as bar:
            report = audit(sentences, text_stage, detector, detector_config, build_image_loader(), sweep, bar)
    except (FileNotFoundError, ValueError, OSError, DetectorUnavailableError, PipelineNotFoundError) as err:
        raise CommandError(str(err)) from err
    report = {
        **report,
        "detector": asdict(detector_config) | {"box_threshold_of_build": threshold},
        "split": config.split,
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(report, threshold)
    (out / "audit.json").write_text(json.dumps(report, indent=2))
    (out / "audit.txt").write_text(text + "\n")
    plot(report, threshold, out / "pr_curve.png")
    print(json.dumps(report) if args.json else text)
    return 0
