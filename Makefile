# c2bus — the two commands are `make run` and `make test`; both bootstrap everything
# (virtual environment, install, Kafka jars) on a fresh machine with Python 3.11+,
# Java 17+ and Maven.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.c2bus-installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install jars prometheus run console stop test test-unit faults bench lint format schemas clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"c2bus needs Python 3.11+, found {v.major}.{v.minor}: run make with PYTHON=python3.11 (or newer)")'
	@echo "c2bus: creating the virtual environment in $(VENV) and installing c2bus[dev]…"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv and install c2bus with its dev tools

jars: $(STAMP)  ## check Java and fetch the Kafka jars from Maven Central (cached)
	$(BIN)/c2bus kafka fetch

prometheus:  ## install Prometheus (Debian package) if missing, for the observability tests
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
		echo "c2bus: $$(prometheus --version 2>&1 | head -1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "c2bus: installing Prometheus (Debian package prometheus)…"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || \
		echo "c2bus: could not install prometheus: its tests will be skipped (under CI=true they fail)"; \
	else \
		echo "c2bus: Prometheus is missing and this user cannot install it (apt-get as root):"; \
		echo "       the Prometheus tests will be skipped (under CI=true they fail)"; \
	fi

run: jars  ## the whole system: Kafka, topics, services, simulator, Prometheus if installed (Ctrl-C stops)
	$(BIN)/c2bus up

console: $(STAMP)  ## a terminal console on the running gateway
	$(BIN)/c2bus console

stop: $(STAMP)  ## stop a local Kafka left running (c2bus kafka start)
	$(BIN)/c2bus kafka stop

test: jars prometheus test-unit  ## the whole test suite, with a real Kafka and a real Prometheus
	$(BIN)/pytest tests/deploy tests/integration tests/faults $(PYTEST_ARGS)

test-unit: $(STAMP)  ## the unit tests (no Kafka), with full branch coverage of the decision cores
	$(BIN)/coverage run -m pytest tests/unit $(PYTEST_ARGS)
	$(BIN)/coverage report

faults: jars  ## the full fault suite: 30,000 directives per scenario on a three-node cluster
	C2BUS_FAULTS_DIRECTIVES=$${C2BUS_FAULTS_DIRECTIVES:-30000} \
	C2BUS_FAULTS_DURATION_S=$${C2BUS_FAULTS_DURATION_S:-150} \
	$(BIN)/pytest tests/faults -v -s $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.c2bus-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: jars $(BENCH_STAMP)  ## every benchmark against its baseline from the same run: one table, JSON, plots
	$(BIN)/c2bus bench $(BENCH_ARGS)

lint: $(STAMP)  ## ruff, mypy --strict, the import layers, and the schemas checked against the code
	$(BIN)/ruff check c2bus tests loadtests
	$(BIN)/ruff format --check c2bus tests loadtests
	$(BIN)/mypy --strict c2bus
	$(BIN)/lint-imports
	$(BIN)/c2bus schemas export --check

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix c2bus tests loadtests
	$(BIN)/ruff format c2bus tests loadtests

schemas: $(STAMP)  ## regenerate schemas/ from the event types
	$(BIN)/c2bus schemas export

clean:  ## stop local Kafka and remove .venv and .c2bus (jars, data)
	-[ -x $(BIN)/c2bus ] && $(BIN)/c2bus kafka stop
	rm -rf $(VENV) .c2bus .pytest_cache .mypy_cache .ruff_cache .coverage
