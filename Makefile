# learndock: the two commands are `make demo` and `make test`; both install first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS := .venv-peers
# Two cores: set thread counts deliberately (oversubscription makes small loops 10-40x slower).
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export LEARNDOCK_THREADS ?= 2
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: install demo test test-all lint format bench bench-peers docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch from local disk when it is there; otherwise pip resolves torch itself.
	$(BIN)/python -m pip install -q "torch==2.13.0" || true
	$(BIN)/python -m pip install -q -e ".[dev,operon,cluster]"
	touch $(STAMP)

demo: install
	$(BIN)/learndock demo

# Two pytest workers with one torch thread each use both cores without oversubscription.
TEST_ARGS := -n 2 --timeout=1800 --doctest-modules tests specs components pipelines sample_data learndock

test: install
	LEARNDOCK_TEST_THREADS=1 $(BIN)/python -m pytest -q -m "not slow and not slurm" $(TEST_ARGS)

test-all: install
	LEARNDOCK_TEST_THREADS=1 $(BIN)/python -m pytest -q $(TEST_ARGS)
	$(MAKE) docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy specs components pipelines sample_data learndock

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every benchmark writes its figures as JSON under .bench/ and prints ratios to the peer.
bench: install
	mkdir -p .bench
	set -e; for f in tests/benchmarks/bench_*.py; do \
	  echo "== $$f"; $(BIN)/python $$f --out .bench; done

# Peers that are too heavy for the project's environment (e.g. `learnware`, 1.9 GB).
bench-peers:
	test -x $(PEERS)/bin/python || $(PY) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	$(PEERS)/bin/python -m pip install -q "torch==2.13.0" || true
	$(PEERS)/bin/python -m pip install -q learnware fast_pytorch_kmeans numpy scipy

docs: install
	$(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) $(PEERS) .bench site .pytest_cache .ruff_cache .mypy_cache
