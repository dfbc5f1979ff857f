"""Every ``>>>`` example of the installed package runs, and none disappears unnoticed.

The modules with examples are listed below. Each must still have examples, run at least one and fail
none: a module whose examples were deleted fails here instead of passing with nothing checked. A module
that gains examples must be added to the list, so that they run too. The search covers the installed
package, model/, beam_jobs/ and schemas/ included (grit_pipeline.model, .beam_jobs, .schemas), and reads
source text first: only modules holding ``>>>`` are imported.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import pkgutil

import pytest

# The installed packages whose folders are searched: model/, beam_jobs/ and schemas/ are mapped into
# the namespace (pyproject.toml's package-dir), so an editable install does not list them under
# grit_pipeline's own folder.
ROOTS = ("grit_pipeline", "grit_pipeline.model", "grit_pipeline.beam_jobs", "grit_pipeline.schemas")

WITH_EXAMPLES = (
    "grit_pipeline.evalsets.flickr30k",
    "grit_pipeline.fetch.area",
    "grit_pipeline.fetch.scratch",
    "grit_pipeline.evalsets.intervals",
    "grit_pipeline.grounding",
    "grit_pipeline.grounding.devices",
    "grit_pipeline.grounding.spans",
    "grit_pipeline.inputs.files",
    "grit_pipeline.inputs.image_files",
    "grit_pipeline.locations",
    "grit_pipeline.markup",
    "grit_pipeline.model.images",
    "grit_pipeline.model.referring",
    "grit_pipeline.schemas.rejects",
)


def _modules_of(package: str) -> dict[str, str]:
    """Module name -> source file for ``package`` and everything below it, imported nothing."""
    spec = importlib.util.find_spec(package)
    found = {package: spec.origin}
    for info in pkgutil.iter_modules(spec.submodule_search_locations):
        name = f"{package}.{info.name}"
        if name in ROOTS:
            continue  # searched as a root of its own
        if info.ispkg:
            found |= _modules_of(name)
        else:
            found[name] = info.module_finder.find_spec(name).origin
    return found


def modules_with_examples() -> set[str]:
    """Every module of the installed package whose own docstrings hold at least one example."""
    found = set()
    for root in ROOTS:
        for name, path in _modules_of(root).items():
            with open(path, encoding="utf-8") as handle:
                if ">>>" not in handle.read():
                    continue
            if any(test.examples for test in doctest.DocTestFinder().find(importlib.import_module(name))):
                found.add(name)
    return found


def run_examples(name: str) -> tuple[doctest.TestResults, str]:
    """Run the module's examples as ``doctest.testmod`` does; the results and the failure report."""
    module = importlib.import_module(name)
    runner, report = doctest.DocTestRunner(verbose=False), io.StringIO()
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.write)
    return doctest.TestResults(runner.failures, runner.tries), report.getvalue()


def test_the_list_is_every_module_with_examples():
    found = modules_with_examples()
    assert sorted(found - set(WITH_EXAMPLES)) == [], "modules with examples missing from WITH_EXAMPLES"
    assert sorted(set(WITH_EXAMPLES) - found) == [], "modules in WITH_EXAMPLES that lost their examples"


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_the_examples_run_and_hold(name):
    (failed, attempted), report = run_examples(name)
    assert attempted > 0, f"{name} has no example left that runs (all gone or all skipped)"
    assert failed == 0, report


def test_the_search_reaches_the_mapped_packages_and_does_not_count_skipped_examples():
    # The checks above are only as good as the search: it must reach model/, beam_jobs/ and schemas/
    # through the installed mapping, and a skipped example must not count as one that ran.
    names = set().union(*(_modules_of(root) for root in ROOTS))
    assert {
        "grit_pipeline.model.images",
        "grit_pipeline.beam_jobs.job",
        "grit_pipeline.schemas.rejects",
    } <= names
    assert {"grit_pipeline.cli", "grit_pipeline.fetch.resize", "grit_pipeline.evalsets"} <= names
    skipped = doctest.DocTestParser().get_doctest(">>> 1 + 1  # doctest: +SKIP\n3\n", {}, "skip", None, 0)
    runner = doctest.DocTestRunner(verbose=False)
    runner.run(skipped, out=lambda _: None)
    assert (runner.failures, runner.tries) == (0, 0)
