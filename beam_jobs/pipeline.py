"""The job's graph: read -> dedup -> parse -> fetch -> (dedup by hash) -> ground -> assemble -> write.

Parsing comes before fetching so that captions the text stage rejects cost no download.
"""

from __future__ import annotations

import apache_beam as beam

from grit_pipeline.beam_jobs.config import BuildConfig
from grit_pipeline.beam_jobs.dedup import Deduplicate, committed_shards
from grit_pipeline.beam_jobs.ground import GroundAndAssemble
from grit_pipeline.beam_jobs.output_dir import RunPlan
from grit_pipeline.beam_jobs.progress import records_folder
from grit_pipeline.beam_jobs.records import REJECTS, STATS
from grit_pipeline.beam_jobs.stages import FetchImages, ParseCaptions, ReadInputs
from grit_pipeline.beam_jobs.write import WriteOutputs


def build_graph(
    pipeline: beam.Pipeline,
    config: BuildConfig,
    plan: RunPlan,
    files: list[str],
    extra_fields=(),
):
    """Add the whole job to ``pipeline``; returns the PCollection of the sealed list's length.

    A retry run (``plan.transient_reasons`` set) reads only those rows of its rejects files.
    """
    rejects, stats = [], []

    def stage(rows, label, transform, main="rows", has_stats=True):
        out = rows | label >> transform
        rejects.append(out[REJECTS])
        if has_stats:
            stats.append(out[STATS])
        return out[main]

    earlier = committed_shards(config.output)  # what earlier runs accepted stays taken
    records = records_folder(plan.staging)
    read = ReadInputs(
        files, config.input_options, plan.transient_reasons, config.progress_interval_s, earlier, records
    )
    rows = stage(pipeline, "Read", read)
    if config.dedup == "url":
        rows = stage(rows, "DedupByUrl", Deduplicate("url", earlier), has_stats=False)
    else:  # the URL grouping also spreads one big input file's rows over the workers; do that anyway
        rows = rows | "SpreadRows" >> beam.Reshuffle()
    if (
        config.dedup == "sha256" and config.input_options.image_path_column
    ):  # one file is one content: before the reads
        rows = stage(rows, "DedupByFile", Deduplicate("image_file"), has_stats=False)
    rows = stage(rows, "Parse", ParseCaptions(config.text))
    rows = stage(rows, "Fetch", FetchImages(config.fetch))
    if config.dedup == "sha256":
        rows = stage(rows, "DedupByHash", Deduplicate("sha256", earlier), has_stats=False)
    records = stage(
        rows,
        "GroundAndAssemble",
        GroundAndAssemble(
            config.detector, config.store_images, config.max_batch_wait_s, config.ground_accelerator
        ),
        "records",
    )
    all_rejects = rejects | "AllRejects" >> beam.Flatten()
    all_stats = stats | "AllStats" >> beam.Flatten()
    return (records, all_rejects, all_stats) | "Write" >> WriteOutputs(
        plan, config.rows_per_shard, extra_fields, config.progress_interval_s
    )
