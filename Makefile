.PHONY: demo test test-fast setup lint generate docs

demo:      ## the main job (README)
	bash scripts/demo.sh

test:      ## the whole test suite (README)
	bash scripts/test.sh

test-fast: ## lint and the fast layer (tests/unit/), about a minute
	bash scripts/test.sh --fast

setup:
	bash scripts/setup.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

generate:  ## regenerate the committed protobuf/gRPC code
	.venv/bin/python -m protos.generate

docs:      ## regenerate docs/reference/ (CLI, settings, tasks) and build the docs site into site/
	.venv/bin/python scripts/docs.py && .venv/bin/mkdocs build --strict
