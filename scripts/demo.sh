#!/usr/bin/env bash
# The main job: log all-MiniLM-L6-v2 to a local MLflow store, export the serving bundle, start
# every tier and the gateway on loopback, query through the gateway, print a similarity ranking.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/splitserve demo --workdir "${SPLITSERVE_DEMO_DIR:-.}"
