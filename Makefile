# tidemark: `make test` installs everything the tests need and runs them; `make run` starts the collector.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian peers started by the tests themselves on loopback.
TEST_PEERS := graphite-carbon graphite-web gunicorn etcd-server etcd-client
# Extra peers only the benchmarks use.
BENCH_PEERS := victoria-metrics wrk
PYTEST_ARGS ?=

.PHONY: all venv compile peers bench-peers test lint typecheck run demo bench clean

all: test

# Installed without compiling (the compile target below does it once, with the venv's mypyc).
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77'
	TIDEMARK_COMPILE=0 $(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The agent's data path compiled in place with mypyc (agent/native.py), again whenever a
# source it depends on changes. With a C compiler a failed compile fails the build; without
# one the data path stays interpreted, and setup.py says so.
$(VENV)/.compiled: $(VENV)/.installed setup.py $(shell find agent registry tidemark -name '*.py')
	TIDEMARK_COMPILE=$$(command -v cc >/dev/null && echo require || echo 1) \
		$(PY) setup.py -q build_ext --inplace
	touch $@

compile: $(VENV)/.compiled

# Installs missing Debian packages when run as root; otherwise says what the tests will skip.
define install_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "not root: missing Debian packages$$missing (tests that need them are skipped)"; fi
endef

peers:
	$(call install_debs,$(TEST_PEERS))

bench-peers: peers
	$(call install_debs,$(BENCH_PEERS))

# Lint and type checks first (quick), then the whole suite.
test: venv compile peers lint
	$(PY) -m pytest -q $(PYTEST_ARGS)
	@echo "the agent suites again, with the data path interpreted (agent/native.py):"
	TIDEMARK_INTERPRETED=1 $(PY) -m pytest -q tests/test_agent_*.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy tidemark collector registry agent models capacity

run: venv compile
	$(VENV)/bin/tidemark collector --data-dir ./data/collector --config ./collector/conf/sample.toml

demo: run

bench: venv compile bench-peers
	$(PY) benchmarks/collector_ingest.py
	$(PY) benchmarks/collector_render.py
	$(PY) benchmarks/agent_recording_cost.py
	$(PY) benchmarks/agent_p999_accuracy.py
	$(PY) benchmarks/agent_sidecar_overhead.py --rounds 3 --floor
	$(PY) benchmarks/agent_registry_reaction.py
	$(PY) benchmarks/registry_propagation.py
	$(PY) benchmarks/forecast_m4.py
	$(PY) benchmarks/forecast_fleet.py
	$(PY) benchmarks/anomaly_nab.py
	$(PY) benchmarks/capacity_curve.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build agent/*.so agent/compiled-sources.json
