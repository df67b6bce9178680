#!/usr/bin/env bash
# Creates .venv with Python 3.13 (or $PYTHON) and installs the project with requirements.txt's
# pinned runtime packages; sourced by the other scripts.
#   bash scripts/bootstrap.sh            the app, the CLI and the tests' tools (pytest, ruff, mypy)
#   bash scripts/bootstrap.sh --runtime  the app and the CLI only: for a production VM
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras=".[dev]"
if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced: test.sh's arguments are pytest's
    case "${1:-}" in
        "") ;;
        --runtime) extras="." ;;
        *)
            echo "error: unknown option $1 (use --runtime for the app and the CLI only)" >&2
            exit 2
            ;;
    esac
fi
PYTHON="${PYTHON:-python3.13}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install Python 3.13 or set PYTHON=/path/to/python3.13" >&2
    exit 2
fi
version='import sys; print(sys.version_info[:2])'
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c "$version")" != "$("$PYTHON" -c "$version")" ]; then
    rm -rf .venv  # made by another Python: rebuild rather than mix
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The runtime packages at requirements.txt's exact versions (what the Functions remote build
# installs, so tests run with what is deployed); the dev tools within pyproject's ranges.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -e "$extras"
