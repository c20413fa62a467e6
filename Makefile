# One command each: `make demo` runs the main job, `make test` the checks and tests.
# Every tool runs from the project's virtual environment (.venv, made by `make install`).
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/.venv

.PHONY: install lock demo test lint bench stack-up stack-down

install:
	bash deploy/local/install.sh

# Regenerate requirements/*.lock from pyproject.toml (e.g. make lock ARGS=--upgrade).
lock: install
	bash deploy/local/lock.sh $(ARGS)

demo: install
	voicemon demo --seconds 60

lint:
	ruff check .
	ruff format --check .
	mypy
	lint-imports
	vulture

# The suite runs on TEST_WORKERS pytest-xdist workers, each with a Kafka broker and a
# redis-server of its own (tests/conftest.py); whole modules go to a worker, slowest first.
TEST_WORKERS ?= 6

test: install lint
	python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

bench: install
	python -m tests.perf.ingest

stack-up:
	voicemon stack up

stack-down:
	voicemon stack down
