"""Write requirements.txt: the exact version of every package the runtime needs, as installed.

The Azure Functions remote build installs requirements.txt and nothing else, so an unpinned
dependency of a dependency would be whatever the index serves on deploy day. This walks
pyproject.toml's [project] dependencies (not the dev extra) through the installed packages'
own requirements, markers evaluated for this interpreter (Linux, Python 3.13: the Bicep's
default pythonVersion), and pins each package at its installed version, the `pip freeze` line.

Run it with the project's venv after changing a dependency in pyproject.toml and installing it:
    .venv/bin/python scripts/pin_requirements.py
tests/test_packaging.py fails while requirements.txt and the venv disagree.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# What the Azure Functions deployment installs (remote build): every package the runtime needs,
# dependencies of dependencies included, at the exact version installed and tested; resolved for
# Linux and Python 3.13. pyproject.toml keeps the ranges. Written by scripts/pin_requirements.py
# (run it after changing a dependency); tests/test_packaging.py checks that every pin is inside
# pyproject's range, every pyproject dependency is pinned, the pins are closed under their own
# requirements and equal what is installed.
"""


def runtime_closure(dependencies: list[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution ``dependencies`` need, by canonical name."""
    found: dict[str, metadata.Distribution] = {}
    extras: dict[str, set[str]] = {}
    pending = [Requirement(text) for text in dependencies]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        wanted = set(requirement.extras)
        if name in found and wanted <= extras[name]:
            continue
        distribution = metadata.distribution(requirement.name)  # not installed: an error
        found[name] = distribution
        extras[name] = extras.get(name, set()) | wanted
        environments = [{"extra": extra} for extra in sorted(extras[name])] or [{"extra": ""}]
        for text in distribution.requires or ():
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate(e) for e in environments):
                pending.append(needed)
    return found


def pinned_lines(dependencies: list[str]) -> list[str]:
    closure = runtime_closure(dependencies)
    return [
        f"{closure[name].metadata['Name']}=={closure[name].version}" for name in sorted(closure)
    ]


def project_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def main() -> int:
    lines = pinned_lines(project_dependencies())
    (ROOT / "requirements.txt").write_text(HEADER + "\n".join(lines) + "\n")
    print(f"requirements.txt: {len(lines)} packages pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
