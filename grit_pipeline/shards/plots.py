"""PNG histograms of `grit inspect`'s distributions (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os

import numpy as np

from grit_pipeline.shards.stats import Histogram, ShardStats

# The plotted distributions: file name -> (title, x label, how to find the histogram).
PLOTS: dict[str, tuple[str, str, str]] = {
    "spans_per_caption": ("Referring expressions per caption", "spans", "ref_exps.spans_per_caption"),
    "boxes_per_span": ("Boxes per referring expression", "boxes", "ref_exps.boxes_per_span"),
    "box_area": ("Box area (fraction of the image)", "area", "noun_chunks.box_area"),
    "score": ("Box score", "score", "noun_chunks.score"),
    "caption_length": ("Caption length", "characters", "caption_chars"),
}


def _histogram(stats: ShardStats, where: str) -> Histogram:
    column, _, name = where.rpartition(".")
    owner = stats.columns[column] if column else stats
    return getattr(owner, name)


def _draw(histogram: Histogram, title: str, xlabel: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    edges, counts = histogram.edges(), histogram.counts
    if histogram.kind == "count":  # integer bars centred on their value
        ax.bar(edges[:-1], counts, width=0.9, color="#1f77b4")
    else:
        ax.stairs(counts, edges, fill=True, color="#1f77b4")
    summary = histogram.summary()
    if summary["count"]:
        ax.set_title(
            f"{title}\nn={summary['count']:,}  mean={summary['mean']:.3g}  median={summary['p50']:.3g}"
        )
    else:
        ax.set_title(f"{title}\n(no values)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if histogram.kind == "count" and np.any(counts):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(-0.5, max(int(np.nonzero(counts)[0].max()) + 0.5, 1.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(stats: ShardStats, out_dir: str) -> list[str]:
    """One PNG per distribution in ``out_dir`` (created); returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, (title, xlabel, where) in PLOTS.items():
        path = os.path.join(out_dir, f"{name}.png")
        _draw(_histogram(stats, where), title, xlabel, path)
        written.append(path)
    return written
