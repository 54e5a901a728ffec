# Every target sets itself up: `make test` alone works on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PC := $(VENV)/bin/pipeline-check
STAMPS := .stamps
KAFKA_LIBS := compose/kafka/libs
TOOLS := .tools/bin
TOXIPROXY_VERSION := v2.12.0
LAKEHOUSE_LIBS := compose/lakehouse/libs
PYTEST := $(PY) -m pytest
# pipeline.toml for gate-production [default: $PIPELINE_CHECK_CONFIG, ./pipeline.toml, else the reference stack's]
CONFIG ?= $(if $(PIPELINE_CHECK_CONFIG),,$(if $(wildcard pipeline.toml),,compose/pipeline.toml))

.PHONY: help setup test test-unit lint typecheck stack-up stack-down stack-status validate-pipeline \
        test-e2e test-e2e-rest test-e2e-pipeline test-e2e-health test-e2e-freshness test-e2e-resilience \
        test-e2e-cluster bench soak clean \
        gate-production

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

setup: $(STAMPS)/venv $(STAMPS)/kafka $(STAMPS)/lakehouse $(STAMPS)/toxiproxy-$(TOXIPROXY_VERSION) $(STAMPS)/chromium $(STAMPS)/promtool ## create .venv, install the project, fetch the Kafka and lakehouse jars, build Toxiproxy, install Chromium, get promtool (once)

$(STAMPS)/venv: pyproject.toml constraints.txt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[reference,dev,containers]'
	@touch $@

$(STAMPS)/kafka: compose/kafka/pom.xml
	@mkdir -p $(STAMPS)
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -f compose/kafka/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(KAFKA_LIBS))
	@touch $@

# Toxiproxy's server, for network faults (no kernel netem here): built from source at a pinned tag, once.
# `go install` names the binary after its package (`server`), hence the rename; the stamp carries the
# version so a new pin rebuilds.
$(STAMPS)/toxiproxy-$(TOXIPROXY_VERSION):
	@command -v go >/dev/null || { echo "make setup: Toxiproxy is built with Go; install Go >= 1.22 (https://go.dev/dl)"; exit 1; }
	@mkdir -p $(STAMPS) $(TOOLS)
	GOBIN=$(abspath $(TOOLS)) go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv -f $(TOOLS)/server $(TOOLS)/toxiproxy-server
	@touch $@

# Headless Chromium for the HTML report's browser test (driven by Playwright, whose own browser download is
# not reachable here): Debian's package, installed when missing. Without root setup goes on without the
# stamp and says so; the browser test then fails naming the missing binary.
$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	@if test -x /usr/bin/chromium; then touch $@; \
	elif [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium && touch $@; \
	else echo "make setup: no /usr/bin/chromium, so the HTML report's browser test will fail; as root: apt-get install -y chromium"; fi

# the lakehouse profile's Iceberg REST catalog server (compose/lakehouse); after the Kafka jars, as the two
# Maven runs share the local repository (`make -j setup` runs the other steps side by side)
$(STAMPS)/lakehouse: compose/lakehouse/pom.xml | $(STAMPS)/kafka
	@mkdir -p $(STAMPS)
	rm -rf $(LAKEHOUSE_LIBS)
	mvn -q -B -f compose/lakehouse/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(abspath $(LAKEHOUSE_LIBS))
	@touch $@

# promtool checks the watch's alert rules and metrics in tests: taken out of Debian's prometheus package
# into .tools/bin (no server installed, none started). Without apt those checks skip and say why.
$(STAMPS)/promtool: | $(STAMPS)/chromium  # one apt at a time
	@mkdir -p $(STAMPS) $(TOOLS)
	@if command -v apt-get >/dev/null; then \
	  rm -rf .tools/prometheus && mkdir -p .tools/prometheus && ( cd .tools/prometheus && \
	  { apt-get download -q prometheus 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && apt-get download -q prometheus 2>/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb pkg && cp pkg/usr/bin/promtool $(abspath $(TOOLS))/promtool ); \
	  rm -rf .tools/prometheus; \
	fi; \
	if [ -x $(TOOLS)/promtool ]; then touch $@; \
	else echo "make setup: promtool not available (Debian's prometheus package); the promtool checks of the watch tests skip"; fi

# `make test` runs the unit tests (on every core) and the e2e suites that prove the verdicts on real
# services: the verdict matrix and the lakehouse profile. The other e2e suites and the fault scenarios take
# longer than its 10-minute budget allows: `make test-e2e-rest` and `make test-e2e-resilience`, which CI
# runs as well.
TEST_E2E := tests/e2e/test_verdict_matrix.py tests/e2e/test_lakehouse_pipeline.py

test: setup ## unit tests, the verdict matrix and the lakehouse profile e2e (real Kafka, Iceberg, services)
	$(PYTEST) -n auto tests/unit
	$(PYTEST) $(TEST_E2E)

test-e2e-rest: setup ## every e2e suite `make test` leaves out but the fault scenarios and the cluster profile
	$(PYTEST) -m "e2e and not resilience and not cluster" $(addprefix --ignore=,$(TEST_E2E)) tests/e2e

# -rP: each passed test's output
test-e2e-cluster: setup ## the cluster profile: 3 brokers, RF 3 / min ISR 2, a validation, the faults on brokers, Trogdor background load
	$(PYTEST) -rP -m cluster tests/e2e

# -rP: each passed scenario's output, which names its fault and recovery time
test-e2e-resilience: setup ## faults while canaries flow: kills, restarts, network latency and cuts, outages
	$(PYTEST) -rP -m resilience tests/e2e

test-unit: setup ## fast tests, no processes
	$(PYTEST) -m "not e2e" tests

lint: setup ## ruff + mypy strict
	$(VENV)/bin/ruff check pipeline_check tests compose/services benchmarks
	$(VENV)/bin/ruff format --check pipeline_check tests compose/services benchmarks
	$(VENV)/bin/mypy

stack-up: setup ## start the local reference stack (Kafka, consumer, ingestor, API)
	$(PC) stack up

stack-down: setup ## stop the local stack; no process or port left behind
	$(PC) stack down

stack-status: setup ## state, health, pid, uptime, restarts of each service
	$(PC) stack status

validate-pipeline: setup ## start the local stack, run the freshness scenario, write reports/, stop the stack
	$(PC) validate -c compose/pipeline.toml --start-stack --scenario freshness --json reports/validation.json --junit reports/junit.xml \
	    --html reports/validation.html

# The production scenario is passive (it injects nothing) and its checks include `contract`: one run
# judges freshness, lag, API response times and the contract of whatever the config points at.
gate-production: setup ## deploy gate on what CONFIG points at: passive freshness and lag, API response times, the contract; reports/production.*
	$(PC) validate $(if $(strip $(CONFIG)),-c $(CONFIG)) --scenario production \
	    --json reports/production.json --junit reports/production-junit.xml

test-e2e: setup ## every e2e suite against a local stack the tests start on free ports
	$(PYTEST) -m e2e tests/e2e

test-e2e-pipeline: setup ## complete pipeline: WS/Kafka -> API, consistency, schema, fidelity, DLQ, replay
	$(PYTEST) tests/e2e/test_complete_pipeline.py

test-e2e-health: setup ## stack health: start order, health propagation, restarts during a stream
	$(PYTEST) tests/e2e/test_stack_health.py

test-e2e-freshness: setup ## freshness SLA, per-stage budgets, throughput floor, delayed consumer
	$(PYTEST) tests/e2e/test_data_freshness.py

bench: setup ## benchmarks (not part of `make test`): writes reports/bench.json, prints a table; see BENCHMARKS.md
	$(PY) -m benchmarks

soak: setup ## 50 consecutive validations (default stack and cluster, plain and fault scenarios): reports/soak.json, the flaky ones with their cause (about an hour)
	$(PY) -m benchmarks.soak --runs 50

clean: ## remove the venv, stamps, stack state and reports
	-$(PC) stack down 2>/dev/null
	rm -rf $(VENV) $(STAMPS) .stack reports $(KAFKA_LIBS)
