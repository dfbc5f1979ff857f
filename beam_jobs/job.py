"""From a BuildConfig to a committed run: lock, checks, output modes, the job on its runner, the commit.

``run(argv)`` is the job's entry point (``python -m grit_pipeline.beam_jobs.job``); `grit build`
calls ``launch`` with the BuildConfig of its parsed arguments. On every runner the launcher holds
OUTPUT's lock, waits for the job (logging Beam's counters while it runs), then commits the run
itself (see ``commit``) and reports the counts. Exit status: 0 done, 1 the job or its commit
failed (nothing committed, inputs unfinished), 2 a user error (one line).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, replace

import fsspec

import grit_pipeline
from grit_pipeline.beam_jobs import progress
from grit_pipeline.beam_jobs.beam_api import fresh_metrics
from grit_pipeline.beam_jobs.commit import CommitError, commit, sealed_items
from grit_pipeline.beam_jobs.config import BuildConfig, BuildError
from grit_pipeline.beam_jobs.job_state import runner_name
from grit_pipeline.beam_jobs.lock import OutputLock, OutputLockedError
from grit_pipeline.beam_jobs.modes import prepare, recover
from grit_pipeline.beam_jobs.options import BEAM_ARGV, add_arguments, build_config
from grit_pipeline.beam_jobs.output_dir import (
    OutputExistsError,
    RunPlan,
    load_manifest,
    new_run_id,
    renames_cheaply,
    start_run,
)
from grit_pipeline.beam_jobs.progress import LOGGER
from grit_pipeline.beam_jobs.runners import (
    ENVIRONMENT_CACHE_MS,
    check_paths_reachable,
    keep_sdk_environments,
    pick_runner,
    provide_job_server,
    workers_on_this_machine,
)
from grit_pipeline.fetch import TRANSIENT_REASONS
from grit_pipeline.grounding import TINY_DETECTOR, DetectorConfig, DetectorUnavailableError, load_detector
from grit_pipeline.grounding.staging import is_staged_url, staged_provenance
from grit_pipeline.inputs import InputError, check_input_files, keep_column_fields, list_input_files
from grit_pipeline.inputs.config import UNKNOWN_RESIZE_GEOMETRY
from grit_pipeline.inputs.frames import OPTION_HINT
from grit_pipeline.locations import NUM_PATCHES_PER_SIDE
from grit_pipeline.schemas import SHARD_SCHEMA, SHARD_SCHEMA_VERSION, list_shard_files, read_shard
from grit_pipeline.text import PipelineNotFoundError, TextStage

__all__ = ["BuildError", "launch", "run"]


def _input_files(inputs) -> dict[str, int | None]:
    """Every input file with its size; a file, folder or glob with no input file is an error."""
    files: dict[str, int | None] = {}
    for spec in inputs:
        for path in list_input_files(spec):
            fs, fs_path = fsspec.core.url_to_fs(path)
            files[path] = fs.size(fs_path)
    return files


def _retry_plan(output: str) -> tuple[list[str], list]:
    """The rejects files of OUTPUT holding transient failures, and the shard schema's extra fields."""
    recover(output)
    if load_manifest(output) is None:
        raise BuildError(f"--retry-rejects: {output} holds no finished build (no manifest.json)")
    fs, root = fsspec.core.url_to_fs(output)
    # The committed files (manifest.json's index), never a listing of the folders.
    sources = list_shard_files(f"{output}/rejects", "rejects") if fs.exists(f"{root}/rejects") else []
    shards = list_shard_files(f"{output}/shards") if fs.exists(f"{root}/shards") else []
    extra = [f for f in read_shard(shards[0]).schema if f.name not in SHARD_SCHEMA.names] if shards else []
    return sources, extra


def _todo(config: BuildConfig) -> tuple[list[str], list, list[str]]:
    """(files to read, shard extra fields, rejects files retried) for the run mode."""
    if config.retry_rejects:
        sources, extra_fields = _retry_plan(config.output)
        return sources, extra_fields, sources
    files = _input_files(config.input_paths)
    check_input_files(list(files), config.input_options)  # unreadable files, wrong columns: one line, first
    todo, skipped = prepare(config.output, config.mode, files)
    if skipped:
        LOGGER.info("incremental: %d input file(s) already finished, skipped", len(skipped))
    return todo, (keep_column_fields(todo[0], config.input_options) if todo else []), []


def _load_detector_provenance(config: BuildConfig, here: bool) -> tuple[DetectorConfig, dict]:
    """Load the detector once here (workers on this machine) so an unavailable model fails now."""
    if not here:  # remote workers load it; this machine may not have it, or a GPU
        provenance = config.detector.provenance()
        if is_staged_url(config.detector.model):  # its checksum and revision, from the checksums file
            try:
                provenance.update(staged_provenance(config.detector.model))
            except (DetectorUnavailableError, OSError) as err:
                raise BuildError(str(err)) from err
        return config.detector, provenance
    detector_config, fallback = config.detector, config.detector_fallback
    try:
        detector = load_detector(detector_config)
    except DetectorUnavailableError as err:
        if fallback is None:
            raise BuildError(
                f"{err}. For an offline smoke run of every stage, add --detector {TINY_DETECTOR}"
            ) from err
        LOGGER.warning(
            "detector %s cannot be loaded here (%s); using %s instead",
            detector_config.model,
            err,
            fallback.model,
        )
        detector_config, detector = fallback, load_detector(fallback)
    provenance = detector.provenance()
    del detector
    return detector_config, provenance


def _provenance(config: BuildConfig, text_provenance: dict, detector_provenance: dict) -> dict:
    return {
        "pipeline_version": grit_pipeline.__version__,
        "shard_schema": f"shard/{SHARD_SCHEMA_VERSION}",
        "num_patches_per_side": NUM_PATCHES_PER_SIDE,
        **text_provenance,
        **detector_provenance,
        "fetch": config.to_json()["fetch"],
    }


@dataclass(frozen=True)
class PreparedRun:
    """A job ready to run: the pipeline with the whole graph, and the plan its commit follows."""

    pipeline: object
    plan: RunPlan
    here: bool  # the workers share this machine
    files: tuple[str, ...]


def _options(beam_argv: list[str], test_pipeline):
    from apache_beam.options.pipeline_options import PipelineOptions

    if test_pipeline is not None:
        return test_pipeline.options, None, True
    options = PipelineOptions(beam_argv)
    return options, pick_runner(options), workers_on_this_machine(options)


def prepare_run(
    config: BuildConfig, beam_argv: list[str] | None = None, *, run_id: str | None = None, test_pipeline=None
) -> PreparedRun | None:
    """Check everything, apply the output mode and build the graph; None when nothing is left to do.

    The caller holds OUTPUT's lock (``launch`` does).
    """
    import apache_beam as beam

    from grit_pipeline.beam_jobs.pipeline import build_graph

    options, runner, here = _options(list(beam_argv or []), test_pipeline)
    try:
        todo, extra_fields, retry_sources = _todo(config)
        if not todo:
            LOGGER.info("nothing to do: every input of %s is finished", config.output)
            return None
        text_provenance = TextStage(config.text).provenance()
    except (ValueError, OSError, InputError, OutputExistsError, PipelineNotFoundError, CommitError) as err:
        raise BuildError(str(err)) from err
    detector, detector_provenance = _load_detector_provenance(config, here)
    config = replace(config, detector=detector)
    plan = RunPlan(
        output=config.output,
        run_id=run_id or new_run_id(),
        started_at=time.time(),
        config=config.to_json(),
        provenance=_provenance(config, text_provenance, detector_provenance),
        beam_options=options.get_all_options(drop_default=True, retain_unknown_options=True),
        retry_sources=tuple(retry_sources),
        transient_reasons=tuple(sorted(TRANSIENT_REASONS)) if retry_sources else (),
        publish_by_rename=renames_cheaply(config.output),
    )
    try:
        pipeline = (
            test_pipeline if test_pipeline is not None else beam.Pipeline(runner=runner, options=options)
        )
    except ValueError as err:  # Beam's option validation (e.g. Dataflow without a project)
        raise BuildError(str(err).replace("\n", " ")) from err
    build_graph(pipeline, config, plan, todo, extra_fields)
    return PreparedRun(pipeline, plan, here, tuple(todo))


def _live_counts(result) -> dict[str, int]:
    """Our counters as the runner reports them now ({} when it cannot say yet)."""
    try:
        return progress.job_counts(fresh_metrics(result).query())
    except Exception:  # progress is best effort: a runner that cannot answer must not end the wait
        return {}


NOT_STARTED = "NOT_STARTED"  # _wait's state for a job cancelled because no worker reported
POLL_S = 1.0  # how often the launcher looks at the job while it waits


@dataclass
class _Watch:
    """The launcher's view of a running job: counts from Beam's metrics, else the workers' records."""

    result: object
    records: str  # the run's progress records folder
    started: float  # the job's start, time.monotonic()

    def counts(self) -> dict[str, int]:
        return _live_counts(self.result) or progress.read_records(self.records).counts

    def any_worker(self) -> bool:
        return bool(progress.read_records(self.records).workers) or bool(_live_counts(self.result))

    def line(self) -> str | None:
        counts = self.counts()
        return progress.metrics_line(counts, time.monotonic() - self.started) if counts else None


def _wait(watch: _Watch, interval_s: float, start_timeout_s: float) -> str:
    """Wait for the job, logging its progress every ``interval_s`` seconds; returns its final state.

    Local runners return from ``run()`` only once the job is done. Elsewhere the job runs while
    this waits: ``wait_until_finish`` runs in a thread, and when no worker has reported after
    ``start_timeout_s`` seconds (0: never give up) the job is cancelled and ``NOT_STARTED`` returned.
    """
    finished, outcome = threading.Event(), {}

    def wait_for_job():
        try:
            outcome["state"] = str(watch.result.wait_until_finish())
        except BaseException as err:  # re-raised in the launcher's thread
            outcome["error"] = err
        finally:
            finished.set()

    threading.Thread(target=wait_for_job, name="grit-job-wait", daemon=True).start()
    last_line, worker_seen = time.monotonic(), False
    while not finished.wait(POLL_S):
        now = time.monotonic()
        if interval_s > 0 and now - last_line >= interval_s:
            last_line = now
            line = watch.line()
            if line:
                LOGGER.info(line)
        if start_timeout_s and not worker_seen:
            worker_seen = watch.any_worker()
            if not worker_seen and now - watch.started >= start_timeout_s:
                _cancel(watch.result, start_timeout_s)
                return NOT_STARTED
    if "error" in outcome:
        raise outcome["error"]
    line = watch.line()
    if line:
        LOGGER.info(line)
    progress.write_own_record()
    workers = progress.read_records(watch.records)
    if workers.workers:
        LOGGER.info(progress.workers_line(workers))
    return outcome["state"]


def _cancel(result, timeout_s: float) -> None:
    LOGGER.error(
        "no SDK worker reported within %.0f s (--worker-start-timeout), so the job was cancelled: check that "
        "the workers' environment starts (its image or python has apache_beam and this package; the "
        "runner's worker logs say why it did not)",
        timeout_s,
    )
    try:
        result.cancel()
    except Exception as err:  # the job service may be gone too; the launcher exits 1 either way
        LOGGER.warning("cancelling the job failed: %s", err)
    _CANCELLED_IN_PROCESS.extend(_job_threads())


_CANCELLED_IN_PROCESS: list[threading.Thread] = []  # threads of cancelled jobs still running here


def _job_threads() -> list[threading.Thread]:
    """Threads other than the launcher's that would keep this process from exiting."""
    return [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]


def cancelled_job_left_running() -> bool:
    """True when a job cancelled for want of a worker still runs in this process.

    Beam's embedded job service (``--job_endpoint embed``) runs the job in a thread of the
    launcher, and its ``cancel`` only records the state: a job waiting for a worker that never
    connects waits forever, and Python would wait for that thread at exit. ``grit build`` then
    exits without waiting for it (``commands.build``).
    """
    return any(t.is_alive() for t in _CANCELLED_IN_PROCESS)


def _run_and_commit(prepared: PreparedRun, config: BuildConfig, lock: OutputLock) -> int:
    plan = prepared.plan
    provide_job_server(prepared.pipeline.options)
    if keep_sdk_environments(prepared.pipeline.options):
        LOGGER.info(
            "SDK workers are kept across the job's stages (--environment_cache_millis %d)",
            ENVIRONMENT_CACHE_MS,
        )
    start_run(plan)
    LOGGER.info("run %s: %d input file(s) -> %s", plan.run_id, len(prepared.files), plan.output)
    progress.reset()  # counts of this run only, when several runs share a process
    try:
        started = time.monotonic()
        result = prepared.pipeline.run()
        lock.record_job(result, prepared.pipeline.options)  # a later build asks the runner about it
        watch = _Watch(result, progress.records_folder(plan.staging), started)
        state = _wait(watch, config.progress_interval_s, config.worker_start_timeout_s)
        if state == NOT_STARTED:
            return 1
    except Exception as err:  # the job failed on its runner: say so in a line, commit nothing
        LOGGER.error("the job failed, nothing was committed (its inputs stay unfinished): %s", err)
        return 1
    finally:
        progress.reset()
    items = sealed_items(plan)
    if not state.endswith("DONE") or items is None:
        LOGGER.error("the job ended in state %s without finishing; nothing was committed", state)
        return 1
    try:
        lock.check()
        run = commit(plan, items)
    except (CommitError, OutputLockedError) as err:
        LOGGER.error("%s", err)
        return 1
    except OSError as err:  # e.g. ENOSPC on the journal or the manifest: the next build finishes or undoes it
        LOGGER.error(
            "error: the commit of run %s stopped: %s; nothing new is counted, its inputs stay unfinished "
            "until a build completes it: free space under %s and run `grit build` again (it recovers "
            "this run first)",
            plan.run_id,
            str(err).replace("\n", " "),
            plan.output,
        )
        return 1
    _report(plan.output, run)
    return 0


def launch(config: BuildConfig, beam_argv: list[str] | None = None, *, test_pipeline=None) -> int:
    """Run the job of ``config`` on the runner ``beam_argv`` names; raises BuildError for user errors."""
    progress.configure_logging()
    options, _, here = _options(list(beam_argv or []), test_pipeline)  # refuses DaskRunner
    if not here:  # before the lock, which would already write into OUTPUT
        check_paths_reachable([*config.input_paths, config.output])
    run_id = new_run_id()
    lock = OutputLock(config.output, run_id, runner=runner_name(options))
    try:
        lock.acquire(config.break_lock)
    except OutputLockedError as err:
        raise BuildError(str(err)) from err
    try:
        prepared = prepare_run(config, beam_argv, run_id=run_id, test_pipeline=test_pipeline)
        return 0 if prepared is None else _run_and_commit(prepared, config, lock)
    finally:
        lock.release()


def _report(output: str, run: dict) -> None:
    counts, timings = run["counts"], run["timings"]
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(counts["by_reason"].items(), key=lambda kv: -kv[1]))
    geometry = counts["by_reason"].get(UNKNOWN_RESIZE_GEOMETRY, 0)
    hint = f"; {geometry} img2dataset rows whose resize mode is unknown: {OPTION_HINT}" if geometry else ""
    LOGGER.info(
        "done in %.1f s: %d rows in, %d accepted, %d rejected%s; shards in %s/shards%s",
        timings["wall_s"],
        counts["input"],
        counts["accepted"],
        counts["rejected"],
        f" ({reasons})" if reasons else "",
        output,
        hint,
    )


def run(argv: list[str] | None = None, *, test_pipeline=None) -> int:
    """The job's entry point: argv in, exit status out (2 and one line for a user error)."""
    parser = argparse.ArgumentParser(
        prog="grit build", description="image-text pairs in, GRIT Parquet shards out"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return launch(build_config(args), getattr(args, BEAM_ARGV, None), test_pipeline=test_pipeline)
    except BuildError as err:
        print(f"grit build: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # img2dataset is imported through fetch.decode.img2dataset_module, which quiets it
    sys.exit(run())
