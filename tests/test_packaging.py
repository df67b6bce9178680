"""The deployment files agree with the project: requirements, settings, host configuration."""

from __future__ import annotations

import ast
import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
ENGINE_FILES = sorted([*(ROOT / "shared").rglob("*.py"), ROOT / "function_app.py"])

# The only places the engine may reach the sandbox (a test and demo tool outside the Functions
# package): the two commands that run it, importing it inside the function so that nothing else
# loads it.
SANDBOX_ENTRY_POINTS = {("shared/cli.py", "_sandbox"), ("shared/pipeline/demo.py", "run_demo")}


@dataclass(frozen=True)
class ImportSite:
    path: str  # relative to the repository root
    module: str  # absolute dotted name
    function: str | None  # the enclosing function, None at module level


def import_sites(path: Path) -> Iterator[ImportSite]:
    """Every absolute import in ``path``, with the function it sits in (None at module level)."""
    relative = path.relative_to(ROOT).as_posix()

    def visit(node: ast.AST, function: str | None) -> Iterator[ImportSite]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield ImportSite(relative, alias.name, function)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield ImportSite(relative, child.module, function)
            inner = (
                child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else None
            )
            yield from visit(child, inner or function)

    yield from visit(ast.parse(path.read_text(), str(path)), None)


def test_engine_reaches_the_sandbox_only_lazily_from_its_two_commands():
    sites = [site for path in ENGINE_FILES for site in import_sites(path)]
    sandbox = {
        (site.path, site.function)
        for site in sites
        if site.module.split(".")[0] == "mongodb_sandbox"
    }
    assert sandbox == SANDBOX_ENTRY_POINTS


def test_requirements_match_pyproject_dependencies():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements == pyproject["project"]["dependencies"]


def test_local_settings_example_lists_every_setting():
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    values = example["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert {spec.name for spec in SETTINGS} <= set(values)


def test_host_queue_encoding_matches_what_the_engine_sends():
    from shared.pipeline.fanout import MESSAGE_ENCODING

    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["queues"]["messageEncoding"] == MESSAGE_ENCODING
