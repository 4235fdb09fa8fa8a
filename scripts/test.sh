#!/usr/bin/env bash
# Set up, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
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
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
