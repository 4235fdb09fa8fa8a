#!/usr/bin/env bash
# Create .venv and install splitserve with everything it needs (pinned by requirements.lock).
# Idempotent: reinstalls only when pyproject.toml or requirements.lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.splitserve-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
  echo "Installing splitserve and its dependencies into .venv (a few minutes the first time)..." >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # torch==2.13.0 is the CPU build; a looser spec would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[export,dev,ray]"
  touch "$stamp"
fi
