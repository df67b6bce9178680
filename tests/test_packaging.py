"""The deployment files agree with the project: requirements, settings, host configuration."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pathspec
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

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


def _load_pin_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pin_requirements", PIN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PIN_SCRIPT = ROOT / "scripts" / "pin_requirements.py"
REPIN = (
    "install the pins (bash scripts/bootstrap.sh), or after changing a dependency in "
    f"pyproject.toml and installing it, re-pin: .venv/bin/python {PIN_SCRIPT.relative_to(ROOT)}"
)


def pyproject_dependencies() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(text) for text in pyproject["project"]["dependencies"]]


def requirement_pins() -> dict[str, Version]:
    """requirements.txt as {canonical name: version}; every line must be an exact pin."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==" and "*" not in specifier.version, line
        assert not requirement.marker and not requirement.extras, line
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Version(specifier.version)
    return pins


def test_requirements_pin_every_pyproject_dependency_inside_its_range():
    pins = requirement_pins()
    for dependency in pyproject_dependencies():
        name = canonicalize_name(dependency.name)
        assert name in pins, f"pyproject's {dependency} is not pinned in requirements.txt"
        assert dependency.specifier.contains(pins[name], prereleases=True), (
            f"requirements.txt pins {name}=={pins[name]}, outside pyproject's {dependency}"
        )


def test_requirements_pin_exactly_the_installed_runtime_closure():
    """Every package the runtime needs (dependencies of dependencies too, markers for this
    interpreter) is pinned at the version installed here, and nothing else is: the remote build
    installs what the tests ran with."""
    pins = requirement_pins()
    closure = _load_pin_script().runtime_closure([str(d) for d in pyproject_dependencies()])
    installed = {name: Version(dist.version) for name, dist in closure.items()}
    unpinned = sorted(set(installed) - set(pins))
    assert not unpinned, f"needed at runtime but not pinned: {unpinned}; {REPIN}"
    extra = sorted(set(pins) - set(installed))
    assert not extra, f"pinned but not needed at runtime: {extra}; {REPIN}"
    differ = {name: f"pinned {pins[name]}, installed {installed[name]}" for name in pins}
    differ = {name: text for name, text in differ.items() if pins[name] != installed[name]}
    assert not differ, f"requirements.txt and the venv disagree: {differ}; {REPIN}"


def test_the_pin_script_writes_requirements_txt_as_it_is():
    script = _load_pin_script()
    lines = script.pinned_lines([str(d) for d in pyproject_dependencies()])
    assert (ROOT / "requirements.txt").read_text() == script.HEADER + "\n".join(lines) + "\n"


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


# --- The Functions package: what `func azure functionapp publish` uploads -----------------------

# What a checkout holds besides the repository's files, whether or not this one has them now:
# environments, Azurite's and the demo's output, build metadata and caches, nested caches too.
LOCAL_ARTIFACTS = (
    ".venv/lib/python3.13/site-packages/pymongo/__init__.py",
    ".python_packages/lib/site-packages/pyarrow/__init__.py",
    "node_modules/azurite/package.json",
    "local.settings.json",
    "demo-landing-zone/orders/00000000000000000001.parquet",
    ".mirror-state/demo.db",
    "__azurite_db_blob__.json",
    "__blobstorage__/0/blob",
    "__queuestorage__/0/message",
    "mongo_fabric_mirror.egg-info/PKG-INFO",
    "build/lib/shared/config.py",
    ".hypothesis/examples/0/1",
    ".mypy_cache/3.13/shared/config.data.json",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/0.6.0/1",
    "__pycache__/function_app.cpython-313.pyc",
    "shared/__pycache__/config.cpython-313.pyc",
    "shared/conversion/__pycache__/converter.cpython-313.pyc",
    ".vscode/settings.json",
    ".git/HEAD",
)
# Core Tools leaves these out whatever .funcignore says (FileSystemHelpers.GetLocalFiles).
FUNC_SKIPPED_DIRECTORIES = {".git", ".vscode"}
FUNC_SKIPPED_FILES = {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}
APP_FILES = {"function_app.py", "host.json", "requirements.txt"}


def checkout_files() -> set[str]:
    """The repository's files (tracked or new), its ignored local paths, and LOCAL_ARTIFACTS.

    An ignored directory is listed by git without its contents (``.venv/``); it stands for the
    files under it by one placeholder file, which is what a pattern has to exclude.
    """

    def git_files(*options: str) -> list[str]:
        listing = subprocess.run(
            ["git", "ls-files", "-z", *options], cwd=ROOT, capture_output=True, check=True
        )
        return [name for name in listing.stdout.decode().split("\0") if name]

    files = set(git_files("--cached", "--others", "--exclude-standard"))
    ignored = git_files("--others", "--ignored", "--exclude-standard", "--directory")
    files |= {name + "placeholder" if name.endswith("/") else name for name in ignored}
    return (files | set(LOCAL_ARTIFACTS)) - set(git_files("--deleted"))


def func_walk(files: set[str]) -> set[str]:
    """The files Core Tools considers at all, before .funcignore."""
    return {
        name
        for name in files
        if not FUNC_SKIPPED_DIRECTORIES & set(name.split("/")[:-1])
        and name.rsplit("/", 1)[-1] not in FUNC_SKIPPED_FILES
    }


def packaged_per_gitignore(funcignore: str, files: set[str]) -> set[str]:
    """The package under gitignore's rules, the format .funcignore is documented to have."""
    spec = pathspec.GitIgnoreSpec.from_lines(funcignore.splitlines())
    return {name for name in func_walk(files) if not spec.match_file(name)}


def packaged_per_core_tools(funcignore: str, files: set[str]) -> set[str]:
    """The package as Core Tools' own GitIgnoreParser reads .funcignore.

    Its reading, restated: every pattern, less one leading ``/``, becomes a regular expression
    anchored at the start of the path and matched as a prefix (``**`` → ``.+``, ``*`` → one path
    segment); a file is left out when a pattern matches it and no ``!`` pattern does.
    """

    def expression(patterns: list[str]) -> re.Pattern[str]:
        if not patterns:
            return re.compile(r"$^")
        translated = [
            re.sub(r"[-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), pattern)
            .replace("**", "(.+)")
            .replace("*", "([^/]+)")
            for pattern in patterns
        ]
        return re.compile("^((" + ")|(".join(translated) + "))")

    lines = [line.strip() for line in funcignore.split("\n")]
    patterns = [line for line in lines if line and not line.startswith("#")]
    positive = expression([p.removeprefix("/") for p in patterns if not p.startswith("!")])
    negative = expression([p[1:].removeprefix("/") for p in patterns if p.startswith("!")])
    return {name for name in func_walk(files) if negative.match(name) or not positive.match(name)}


def test_functions_package_holds_only_the_app_the_engine_and_requirements(record_property):
    funcignore = (ROOT / ".funcignore").read_text()
    files = checkout_files()
    package = packaged_per_core_tools(funcignore, files)
    assert package == packaged_per_gitignore(funcignore, files)

    engine = {name for name in files if name.startswith("shared/") and name.endswith(".py")}
    engine -= {name for name in engine if "__pycache__" in name.split("/")}
    assert package == APP_FILES | engine, sorted(package ^ (APP_FILES | engine))

    size = sum((ROOT / name).stat().st_size for name in package)
    record_property("functions_package_files", len(package))
    record_property("functions_package_bytes", size)
    print(f"\nfunctions package: {len(package)} files, {size / 1024:,.0f} KiB before compression")


def test_engine_imports_only_what_requirements_txt_installs():
    """The remote build installs requirements.txt and nothing else: every third-party module the
    app or the engine imports must come from a distribution pyproject names as a dependency (so
    pinned in requirements.txt; not a dev extra, not a dependency of a dependency, which the
    pins hold too but which a new version of its dependent may drop)."""
    provided: set[str] = set()
    for name in (dependency.name for dependency in pyproject_dependencies()):
        for file in metadata.distribution(name).files or ():
            if file.suffix == ".py" or file.suffix in {".so", ".pyd"}:
                module = file.with_suffix("").as_posix().split(".", 1)[0]
                provided.add(module.removesuffix("/__init__").replace("/", "."))

    third_party = {
        site
        for path in ENGINE_FILES
        for site in import_sites(path)
        if site.module.split(".")[0] not in {*sys.stdlib_module_names, "shared"}
        and not (
            site.module.split(".")[0] == "mongodb_sandbox"
            and (site.path, site.function) in SANDBOX_ENTRY_POINTS
        )
    }
    assert third_party  # the walk does see the engine's imports
    missing = sorted(f"{s.path}: {s.module}" for s in third_party if s.module not in provided)
    assert not missing


def test_the_engine_version_is_the_project_version():
    """_partnerEvents.json reports shared.__version__ (the Functions package has no project
    metadata to read it from): it must be the version pyproject declares and pip installed."""
    from shared import __version__

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]
    assert __version__ == metadata.version("mongo-fabric-mirror")
