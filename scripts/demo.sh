#!/usr/bin/env bash
# The main job on its embedded default: publish a sample table to ./demo-landing-zone and inspect it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
exec .venv/bin/mongo-fabric-mirror demo "$@"
