# slurm-k8s: one entry point for people, CI and benchmarks.
# `make test` brings the lab up first; `make unit` needs nothing but Python.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_FLAGS ?=

.PHONY: venv unit lint test lab lab-status lab-down lab-env demo up down compose-demo chaos bench

$(BIN)/python: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(BIN)/python

venv: $(BIN)/python

unit: venv
	$(BIN)/pytest -q tests/unit $(PYTEST_FLAGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lab:
	bash lab/up.sh

lab-status:
	@bash lab/status.sh

lab-down:
	bash lab/down.sh

lab-env:
	@bash lab/env.sh

# The whole suite against the real lab. Integration tests fail (not skip) under CI=true
# when a component they need is unreachable.
test: venv lab
	source <(bash lab/env.sh) && $(BIN)/pytest -q tests $(PYTEST_FLAGS) -m "unit or integration"

demo: venv lab
	source <(bash lab/env.sh) && bash examples/demo.sh

# The system for good on this machine: the lab plus the four services, each supervised
# (restarted when it dies; lab/services.sh). `make down` stops the services, not the lab.
# The integration tests stop them too (they run their own): `make up` again afterwards.
up: venv lab
	bash lab/services.sh start
	@bash lab/services.sh status

down:
	bash lab/services.sh stop

# Every service in a container (compose.yaml + compose.lab.yaml) on the lab's Slurm and
# Kubernetes: the hello job through both doors, then `docker compose down`. Installs Docker
# and builds compose v2 the first time (lab/docker/up.sh); a few minutes. Not in `make test`.
compose-demo: venv lab
	bash lab/docker/compose-demo.sh

# Speed side by side with the raw tools and the seed's naive door (issue 8), on a lab that
# `make lab` brought up: at most 15 minutes, one table, bench/results/latest.{json,png}.
# Not part of `make test`.
bench: venv
	source <(bash lab/env.sh) && $(BIN)/python bench/run.py $(BENCH_FLAGS)

# The chaos run (issue 9, tests/chaos.py): 200 job files while every service is SIGKILLed and
# RabbitMQ, slurmctld and the API server are restarted, then counted. It restarts shared
# daemons: run it alone on the lab. `make test` runs a 24-file form (test_chaos.py).
chaos: venv lab
	source <(bash lab/env.sh) && $(BIN)/python -m tests.chaos $(CHAOS_FLAGS)
