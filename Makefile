# Two commands on a fresh machine: `make test` and `make run`. Only Python 3.11 and pip are assumed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAOS_SECONDS ?= 600
# The suite runs on this many workers (pytest-xdist), each with its own nats-server; a file's
# tests stay on one worker (its fixtures, and the chaos runs one after the other).
TEST_WORKERS ?= 2

.PHONY: setup test lint run bench chaos cluster clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

run: $(STAMP)
	$(BIN)/shop up

bench: $(STAMP)
	$(BIN)/python -m bench

# The long chaos run: every process killed at random for CHAOS_SECONDS (tests/chaos.py).
# CHAOS_SEED=N replays a run's schedule.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --seconds $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# The same on a three-node NATS cluster (deploy/nats-cluster.conf, R3): the leader of INVENTORY,
# of ORDERS and the meta leader killed in turn, services in between; two inventories.
cluster: $(STAMP)
	$(BIN)/python -m tests.chaos --cluster --seconds $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
