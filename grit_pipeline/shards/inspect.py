"""`grit inspect`: counts, distributions, rejects and provenance of shards, as a table, JSON or plots."""

from __future__ import annotations

import json

from grit_pipeline.errors import CommandError
from grit_pipeline.shards.common import iter_tables, resolve_files
from grit_pipeline.shards.guard import ProblemLog
from grit_pipeline.shards.sidecars import find_sidecars, provenance_groups, read_manifests, rejects_summary
from grit_pipeline.shards.stats import ShardStats

# Columns read for the statistics and the row guard: everything but the image bytes themselves is small.
COLUMNS = ["key", "caption", "noun_chunks", "ref_exps", "grounded_caption", "image", "width", "height"]


def collect(path: str, quiet: bool = True, log: ProblemLog | None = None) -> tuple[dict, ShardStats]:
    """The inspection report of the shards under ``path`` (as `--json` prints it) and its statistics.

    Rows with problems are reported to ``log`` (and still counted: the report describes the files).
    """
    files = resolve_files(path)
    stats = ShardStats()
    for shard_path, table in iter_tables(files, COLUMNS, desc="inspect", quiet=quiet):
        if log is not None:
            log.good_rows(shard_path, table)
        try:
            stats.add(table)
        except ValueError as err:
            raise CommandError(f"{shard_path}: {err}") from err
    reject_files, manifest_files = find_sidecars(files)
    report = stats.to_dict()
    report["shards"] = files
    report["rejects"] = rejects_summary(reject_files) if reject_files else None
    report["manifests"] = read_manifests(manifest_files)
    report["provenance"] = provenance_groups(files)
    return report, stats


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{value:,}"


def _distribution_lines(report: dict) -> list[str]:
    rows = [
        ("caption length (chars)", report["caption_chars"]),
        ("phrases per grounded caption", report["grounded_phrases"]),
    ]
    for column in ("ref_exps", "noun_chunks"):
        stats = report["columns"][column]
        rows += [
            (f"{column}: spans per caption", stats["spans_per_caption"]),
            (f"{column}: boxes per span", stats["boxes_per_span"]),
            (f"{column}: box area", stats["box_area"]),
            (f"{column}: score", stats["score"]),
        ]
    header = (
        f"  {'distribution':<32}{'count':>12}{'mean':>9}{'min':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}"
    )
    lines = ["distributions:", header]
    for name, dist in rows:
        cells = [_fmt(dist.get(k)) for k in ("mean", "min", "p50", "p90", "p99", "max")]
        lines.append(f"  {name:<32}{_fmt(dist['count']):>12}" + "".join(f"{c:>9}" for c in cells))
    return lines


def _rejects_lines(report: dict) -> list[str]:
    lines = []
    for entry in report["manifests"]:
        if "error" in entry:
            lines.append(f"manifest {entry['path']}: {entry['error']}")
            continue
        counts = entry["manifest"].get("counts", entry["manifest"])
        lines.append(f"manifest {entry['path']}:")
        lines += [f"  {name:<12}{json.dumps(value, sort_keys=True)}" for name, value in counts.items()]
        lines += _timing_lines(entry["manifest"].get("timings") or {})
    rejects = report["rejects"]
    if rejects:
        lines.append(f"rejects: {rejects['rows']:,} rows in {rejects['files']} files")
        lines += [
            f"  {row['stage']:<10}{row['reason']:<32}{row['rows']:>12,}" for row in rejects["by_reason"]
        ]
    elif not report["manifests"]:
        lines.append("rejects: none found beside the shards (no rejects/ or manifest.json)")
    return lines


def _timing_lines(timings: dict) -> list[str]:
    """The last run's stage timings and grounding batch figures (absent in older manifests)."""
    lines = []
    if "wall_s" in timings:
        lines.append(f"  {'wall_s':<12}{timings['wall_s']}  rows/s {timings.get('rows_per_s')}")
    if timings.get("stage_busy_s"):
        lines.append(f"  {'busy_s':<12}{json.dumps(timings['stage_busy_s'], sort_keys=True)}")
    batches = timings.get("ground_batches")
    if batches:
        lines.append(
            f"  {'batches':<12}{batches['images_grounded']:,} images in {batches['batches']:,} batches, "
            f"mean {batches['mean_batch']} of {batches['configured_batch_size']} "
            f"({100 * batches['batch_fill']:.1f} %), {batches['distinct_shapes']} shapes; "
            f"images/s {timings.get('ground_images_per_s')}"
        )
    return lines


def format_table(report: dict) -> str:
    """The terminal report."""
    totals = [
        ("shards", report["files"]),
        ("rows", report["rows"]),
        ("rows with images", report["images"]),
        ("image bytes", report["image_bytes"]),
    ]
    for column in ("ref_exps", "noun_chunks"):
        stats = report["columns"][column]
        totals += [
            (f"{column}: rows with spans", stats["rows_with_spans"]),
            (f"{column}: spans", stats["spans"]),
            (f"{column}: boxes", stats["boxes"]),
        ]
    lines = [f"{name:<30}{_fmt(value):>16}" for name, value in totals]
    lines += ["", *_distribution_lines(report), "", *_rejects_lines(report), "", "provenance:"]
    for group in report["provenance"]:
        text = (
            json.dumps(group["provenance"], sort_keys=True) if group["provenance"] else "none (e.g. GRIT-20M)"
        )
        lines.append(f"  {group['shards']} shard(s): {text}")
    return "\n".join(lines)
