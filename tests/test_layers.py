"""The dependency direction between layers, read from the source: every import of every module.

schemas (the bottom layer) <- the library (grit_pipeline/ but commands/, and model/) <- beam_jobs (Beam
composition) <- commands (grit_pipeline/commands/: argv -> exit code, the top layer).
Imports inside functions count as much as those at the top: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it is installed as (pyproject.toml's package-dir).
PACKAGES = {
    "grit_pipeline": "grit_pipeline",
    "model": "grit_pipeline.model",
    "schemas": "grit_pipeline.schemas",
    "beam_jobs": "grit_pipeline.beam_jobs",
}


def _module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, at any depth of the file."""
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


COMMANDS = ROOT / "grit_pipeline" / "commands"


def modules(*folders: str) -> list[Path]:
    """The modules of ``folders``; the commands (the top layer) only when asked for by name."""
    found = (p for folder in folders for p in (ROOT / folder).rglob("*.py"))
    return sorted(p for p in found if COMMANDS not in p.parents or "grit_pipeline/commands" in folders)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(folders: tuple[str, ...], forbidden) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(*folders)
        for name in sorted(imports_of(path))
        if forbidden(name)
    ]


def test_the_checker_sees_lazy_relative_and_from_imports(tmp_path):
    # The rules below are only as good as the import reader: prove it on the shapes that occur.
    assert "apache_beam" in imports_of(ROOT / "beam_jobs" / "ground.py")
    assert "grit_pipeline.schemas.shard.Box" in imports_of(ROOT / "grit_pipeline" / "locations.py")
    lazy = imports_of(ROOT / "grit_pipeline" / "commands" / "convert.py")  # imports hf_export inside run()
    assert "grit_pipeline.shards.hf_export" in lazy
    assert modules("schemas") and modules("grit_pipeline") and modules("model")
    # The helpers tests and benchmarks share are library code too: held to the same rules.
    testing = modules("grit_pipeline/testing")
    assert testing and set(testing) <= set(modules("grit_pipeline"))


def test_schemas_import_nothing_else_of_ours():
    def forbidden(name: str) -> bool:
        return _within(name, "grit_pipeline") and not _within(name, "grit_pipeline.schemas")

    assert violations(("schemas",), forbidden) == []


def test_the_library_imports_no_beam():
    def forbidden(name: str) -> bool:
        return _within(name, "apache_beam") or _within(name, "grit_pipeline.beam_jobs")

    assert violations(("grit_pipeline", "model", "schemas"), forbidden) == []


def test_nothing_below_the_commands_imports_them():
    def forbidden(name: str) -> bool:
        return _within(name, "grit_pipeline.commands") or name == "grit_pipeline.cli"

    assert violations(("grit_pipeline", "model", "schemas", "beam_jobs"), forbidden) == []


def test_the_trainer_imports_no_beam_job():
    assert violations(("model",), lambda name: _within(name, "grit_pipeline.beam_jobs")) == []
