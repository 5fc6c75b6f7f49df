# agentwatch: `make demo` and `make test` are all a new user needs; both install first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_LIBS := .kafka/libs
DEMO_SECONDS ?= 60
PYTEST_ARGS ?=
HISTORY_SCALE ?= 1

.PHONY: help install prereqs test-tools test unit integration lint demo bench bench-drift bench-backtest bench-history collector clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

prereqs: ## check Python 3.11+, Java 17+ and Maven, and say how to get what is missing
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: Python 3.11 or newer is required (found: $$($(PYTHON) --version 2>&1))."; \
	  echo "  Debian/Ubuntu: sudo apt-get install python3 python3-venv; or set PYTHON=/path/to/python3.11"; exit 1; }
	@if [ -z "$$KAFKA_HOME" ]; then \
	  command -v java >/dev/null || { echo "error: Java 17+ is required to run the Kafka broker."; \
	    echo "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless"; exit 1; }; \
	  v=$$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $$2}'); \
	  [ "$${v%%.*}" -ge 17 ] 2>/dev/null || { echo "error: Java 17+ is required (found $$v)."; \
	    echo "  Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless"; exit 1; }; \
	  command -v mvn >/dev/null || { echo "error: Maven is required to fetch the Kafka broker from Maven Central"; \
	    echo "  (or set KAFKA_HOME to an Apache Kafka 4.x installation)."; \
	    echo "  Debian/Ubuntu: sudo apt-get install maven"; exit 1; }; \
	fi

$(BIN)/.installed: pyproject.toml | prereqs
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

$(KAFKA_LIBS)/.fetched: kafka-runtime/pom.xml | prereqs
	@mkdir -p $(KAFKA_LIBS)
	mvn -q -B -f kafka-runtime/pom.xml dependency:copy-dependencies \
	  -DoutputDirectory=$(abspath $(KAFKA_LIBS)) -DincludeScope=runtime -DoverWriteIfNewer=true
	@touch $@

install: $(BIN)/.installed $(KAFKA_LIBS)/.fetched ## venv, editable install, Kafka broker jars (idempotent)

test-tools: ## check the system tools the tests run for real (Prometheus, promtool, Alertmanager, docker-compose, PostgreSQL)
	@missing=""; for t in prometheus promtool prometheus-alertmanager docker-compose; do \
	  command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null || \
	  missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "warning: missing$$missing: the tests that need them skip (they fail when CI=true)."; \
	  echo "  Debian/Ubuntu: sudo apt-get install prometheus prometheus-alertmanager docker-compose postgresql"; fi

test: install test-tools ## run the whole test suite (unit and integration, against a real broker)
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install ## run only the tests that need no broker
	$(BIN)/pytest -m 'not integration' $(PYTEST_ARGS)

TYPECHECK := build/typecheck

lint: install ## ruff and mypy (strict) over the installed layout, the tests and the benchmarks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/agentwatch
	@ln -s $(abspath agentwatch)/*.py $(abspath agentwatch)/broker $(abspath agentwatch)/commands $(TYPECHECK)/agentwatch/
	@for d in ingest processors dashboards alerts; do ln -s $(abspath $$d) $(TYPECHECK)/agentwatch/$$d; done
	@ln -s $(abspath tests) $(abspath bench) $(TYPECHECK)/
	cd $(TYPECHECK) && $(abspath $(BIN))/mypy --config-file $(abspath pyproject.toml) -p agentwatch -p tests -p bench

demo: install ## start a local broker, a processor and a simulated fleet, then print a summary
	$(BIN)/agentwatch --log-format text demo --seconds $(DEMO_SECONDS) --data-dir data

bench: install ## CLI start-up, throughput against Kafka's own consumer, containment latency, OTLP receiver spans/s (JSON lines)
	@rc=0; for b in startup throughput containment otlp; do \
	  $(BIN)/python -m bench.$$b || { rc=1; echo "bench.$$b missed its target or failed" >&2; }; done; \
	$(BIN)/python -m bench.containment --hanging-receiver || { rc=1; echo "bench.containment with a hanging receiver missed its target or failed" >&2; }; \
	exit $$rc

bench-drift: install ## drift detection delay and false alarms: scenarios, then non-flat traffic (JSON last)
	$(BIN)/python -m bench.drift; a=$$?; $(BIN)/python -m bench.drift_cases; b=$$?; exit $$((a || b))

bench-backtest: install ## a week of a 10-agent fleet landed, then replayed by alerts backtest every minute (JSON last)
	$(BIN)/python -m bench.backtest

bench-history: install ## weeks of history in small commits: queries, alert evaluation, commits, restart, files at 3 sizes (JSON last; HISTORY_SCALE=4 lands 4x longer)
	$(BIN)/python -m bench.history --scale $(HISTORY_SCALE)

# The OpenTelemetry Collector of deploy/collector/builder.yaml, built by ocb from the Go module
# proxy once per manifest and kept under build/ (the Go build is minutes of CPU; Go's own module
# and build caches make a rebuild in a fresh clone quick).
OTELCOL_VERSION := 0.165.0
COLLECTOR_MANIFEST := deploy/collector/builder.yaml
COLLECTOR_CACHE ?= $(abspath build/otelcol)
COLLECTOR_DIR = $(COLLECTOR_CACHE)/$(shell sha256sum $(COLLECTOR_MANIFEST) | cut -c1-16)
GO ?= $(or $(shell command -v go),$(wildcard /usr/local/go/bin/go),go)

collector: ## build the OpenTelemetry Collector (OTLP in; OTLP/HTTP and Kafka out) into the cache; prints its path
	@test -x $(COLLECTOR_DIR)/otelcol-agentwatch || { \
	  command -v $(GO) >/dev/null || { echo "error: Go 1.25+ is required to build the Collector."; \
	    echo "  https://go.dev/doc/install, or Debian/Ubuntu: sudo apt-get install golang-go (if new enough)"; exit 1; }; \
	  echo "building the OpenTelemetry Collector $(OTELCOL_VERSION) (a few minutes, once) ..." >&2; \
	  mkdir -p $(COLLECTOR_DIR) && \
	  GOBIN=$(COLLECTOR_CACHE)/bin GOFLAGS=-mod=mod $(GO) install go.opentelemetry.io/collector/cmd/builder@v$(OTELCOL_VERSION) && \
	  PATH="$$(dirname $(GO)):$$PATH" GOFLAGS=-mod=mod nice -n 10 $(COLLECTOR_CACHE)/bin/builder \
	    --config=$(abspath $(COLLECTOR_MANIFEST)) --output-path=$(COLLECTOR_DIR)/src >&2 && \
	  mv $(COLLECTOR_DIR)/src/otelcol-agentwatch $(COLLECTOR_DIR)/otelcol-agentwatch; }
	@echo $(COLLECTOR_DIR)/otelcol-agentwatch

clean: ## remove the venv, fetched jars and demo data
	rm -rf $(VENV) .kafka data .pytest_cache .mypy_cache .ruff_cache
