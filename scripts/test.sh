#!/usr/bin/env bash
# Set up, lint, and run the tests: `scripts/test.sh` runs every layer (the README's test command, and
# CI's); `scripts/test.sh --fast` the fast layer only (tests/unit/: no MLflow, no export, no server;
# about a minute). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=0
if [ "${1:-}" = "--fast" ]; then
  fast=1
  shift
fi
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The CPU features that change numerics and int8 kernels, so a failure can be tied to the machine.
.venv/bin/python -m splitserve.core.cpu
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy splitserve preprocess_svc postprocess_svc model_svc gateway_svc
.venv/bin/lint-imports  # the layers: imports flow one way (pyproject.toml [tool.importlinter])
# The docs site (mkdocs.yml) into site/ (ignored); not --quiet, which hides the warnings --strict fails on.
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict
if [ "$fast" = 1 ]; then
  # The fast layer's folders (FAST_LAYERS in tests/conftest.py), so the other layers are not even imported.
  exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 -m fast tests/unit "$@"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
