# One command each: `make demo` runs the main job, `make test` the checks and tests.
.PHONY: install demo test lint bench stack-up stack-down

install:
	bash deploy/local/install.sh

demo: install
	voicemon demo --seconds 60

lint:
	ruff check .
	ruff format --check .
	mypy
	lint-imports
	vulture

test: install lint
	python -m pytest

bench: install
	python -m tests.perf.ingest

stack-up:
	voicemon stack up

stack-down:
	voicemon stack down
