# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast run lint schemas bench clean kafka kafka-jars

# Idempotent: rebuilds only when pyproject.toml changed or the venv is missing.
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration"

run: install
	$(BIN)/python -m worker run --embedded

# Apache Kafka (KRaft) on 127.0.0.1:9092.. from Maven Central's jars: `make kafka BROKERS=3`.
BROKERS ?= 1
kafka: install
	$(BIN)/python -m worker kafka --brokers $(BROKERS)

kafka-jars: install
	$(BIN)/python -c "import worker.stream.kafka_cluster as k; k.kafka_classpath(); print(k.cache_dir())"

lint: install
	$(BIN)/ruff check worker tests
	$(BIN)/ruff format --check worker tests
	$(BIN)/lint-imports
	$(BIN)/mypy worker

schemas: install
	$(BIN)/python -m worker.schemas

bench: install
	$(BIN)/python bench/core_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
