# The two set-up commands are `make demo` and `make test`; everything else is a step of theirs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := python3 -m uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
PYTEST := $(PY) -m pytest
SERVERS := redis-server prometheus promtool prometheus-pushgateway prometheus-alertmanager amtool initdb postgres

.PHONY: help demo install servers test test-unit test-integration test-e2e lint format bench clean
.PHONY: stack stack-down

help:
	@echo "make demo              the whole rollout story offline, on the real controller flow (~1 min)"
	@echo "make install           create .venv/ with the project and its dev tools"
	@echo "make test              install, make sure the real servers exist, run the whole suite"
	@echo "make test-unit         pure tests only (milliseconds, fakeredis)"
	@echo "make test-integration  real redis-server, prometheus, pushgateway, alertmanager"
	@echo "make test-e2e          a real Prefect server and worker"
	@echo "make lint              ruff check, ruff format --check, mypy rollout_core rollout_sdk"
	@echo "make bench             print the benchmark figures"
	@echo "make stack             start the whole product on loopback ports (rollout stack up)"
	@echo "make stack-down        stop it (rollout stack down)"

$(VENV)/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-groups
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rollout demo

servers:
	@bash scripts/ensure-servers $(SERVERS)

# one pytest session per layer: Prefect keeps process-wide clients (its events worker among
# them) bound to the API they first met, and the e2e layer starts and stops its own servers.
# The server layers run in two pytest-xdist workers, one test file at a time each (a file's
# module fixtures stay in one process; every worker starts its own servers on free ports):
# their tests mostly wait on servers. The e2e files go out heaviest first (tests/e2e/conftest.py
# orders them) so the longest file does not start last. The unit layer (pure CPU, no servers,
# no clock) runs beside the integration layer; its report is printed after.
SERVER_LAYER := -n 2 --dist loadfile --no-loadscope-reorder

test: install servers
	@unit_log=$$(mktemp); \
	$(PYTEST) tests/unit -p no:cacheprovider > $$unit_log 2>&1 & unit=$$!; \
	$(PYTEST) tests/integration $(SERVER_LAYER); integration=$$?; \
	wait $$unit; unit_status=$$?; \
	echo "--- tests/unit (ran beside tests/integration) ---"; cat $$unit_log; rm -f $$unit_log; \
	test $$unit_status -eq 0 && test $$integration -eq 0
	$(PYTEST) tests/e2e $(SERVER_LAYER)

test-unit: install
	$(PYTEST) tests/unit

test-integration: install servers
	$(PYTEST) tests/integration $(SERVER_LAYER)

test-e2e: install servers
	$(PYTEST) tests/e2e $(SERVER_LAYER)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy rollout_core rollout_sdk

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

stack: install servers
	$(VENV)/bin/rollout stack up

stack-down:
	$(VENV)/bin/rollout stack down

bench: install servers
	@for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
