#!/usr/bin/env bash
# The whole test suite from a fresh clone: venv + packages, Azurite from npm, lint, types, pytest.
# pytest's fixtures start Azurite and the MongoDB sandbox on free ports and stop them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
npm ci --no-audit --no-fund --loglevel=error
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
