# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast run lint schemas dashboards bench clean kafka kafka-jars stress chaos fuzz lock policy

# Idempotent: rebuilds only when the lock file changed or the venv is missing. The versions
# are the lock's (requirements-dev.lock: what CI and developers run); `make lock` renews it.
install: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev]'
	@touch $(STAMP)

# The lock files from pyproject.toml: requirements.lock (the image: runtime only) and
# requirements-dev.lock (.[dev]: the embedded broker, the sandbox, the tools).
UV_COMPILE := $(BIN)/uv pip compile pyproject.toml --python-version 3.11 --quiet --no-header
lock:
	$(BIN)/python -m pip install --quiet uv
	$(UV_COMPILE) --generate-hashes -o requirements.lock
	$(UV_COMPILE) --extra dev -o requirements-dev.lock

# The manifests against Kubernetes' schemas and checkov's policies (deploy/policy/run).
policy:
	deploy/policy/run

# Two processes; the tests on three Kafka brokers share one (tests/conftest.py). The 25
# slowest tests are listed, so that a slow one is seen when it comes.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration"

run: install
	$(BIN)/python -m worker run --embedded

# Apache Kafka (KRaft) on 127.0.0.1:9092.. from Maven Central's jars: `make kafka BROKERS=3`.
BROKERS ?= 1
kafka: install
	$(BIN)/python -m worker kafka --brokers $(BROKERS)

kafka-jars: install
	$(BIN)/python -c "import worker.devenv.kafka_cluster as k; k.kafka_classpath(); print(k.cache_dir())"

# The restart and two-worker tests many times under CPU load (issue 14); logs kept per run.
RUNS ?= 50
stress: install
	$(BIN)/python tests/e2e/stress.py --runs $(RUNS) --parallel 2 --load 2 \
		-k "(restart or two_workers) and tansu" --out stress-runs/$$(date +%Y%m%d-%H%M%S)

# Bad records through a running worker on each broker (issue 10): FUZZ_RECORDS of them,
# a fresh seed unless FUZZ_SEED is given (printed, to reproduce); `make fuzz FUZZ_K=tansu`.
FUZZ_RECORDS ?= 20000
FUZZ_K ?= running_worker
fuzz: install
	FUZZ_RECORDS=$(FUZZ_RECORDS) FUZZ_SEED=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')} \
		$(BIN)/python -m pytest -q -s tests/e2e/test_fuzz_stream.py -k "$(FUZZ_K)"

lint: install
	$(BIN)/ruff check worker tests
	$(BIN)/ruff format --check worker tests
	$(BIN)/lint-imports
	$(BIN)/mypy worker

schemas: install
	$(BIN)/python -m worker.schemas

# Regenerate deploy/grafana/dashboards/*.json from deploy/grafana/dashboards.py.
dashboards: install
	$(BIN)/python deploy/grafana/dashboards.py

# Throughput, latency, Xledger requests beside plain aiokafka (issue 13):
# `make bench BENCH="--quick --broker kafka"`; the last line is a JSON summary.
BENCH ?=
bench: install
	$(BIN)/python -m worker bench $(BENCH)

# The reliability campaign (issue 10, R14): workers and brokers killed mid-flow, Xledger
# faults; the last line is a JSON summary, exit 0 only when nothing is lost or doubled.
# `make chaos CHAOS="--broker kafka --broker-kills 1 --kills 3"` for Apache Kafka (3 brokers).
CHAOS ?= --events 3000 --kills 5
chaos: install
	$(BIN)/python -m worker chaos $(CHAOS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
