.PHONY: demo test setup lint generate

demo:      ## the main job (README)
	bash scripts/demo.sh

test:      ## the whole test suite (README)
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

generate:  ## regenerate the committed protobuf/gRPC code
	.venv/bin/python -m protos.generate
