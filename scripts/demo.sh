#!/usr/bin/env bash
# The whole product on an embedded MongoDB sandbox: seed sample orders, mirror them live to
# ./demo-landing-zone while a generator inserts, updates, replaces and deletes, drain, verify,
# inspect, then replicate the files to Delta tables in ./demo-tables and query one with DuckDB.
# Progress on stderr, results on stdout; exit 0 only when verify finds every table equal.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/mongo-fabric-mirror demo "$@"
