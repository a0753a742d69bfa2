# Modelport — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Stock MLflow clients may also use http://127.0.0.1:$(MLFLOW_PORT) as their tracking URI: the
# edge serves the platform's authenticated /mlflow route there (MLflow itself is on a socket).
MLFLOW_PORT ?= 5000
MODELPORT_DATA_DIR ?= $(CURDIR)/var
# Links, the printed curl line and where replicas ship their prediction logs follow PORT.
MODELPORT_BASE_URL ?= http://127.0.0.1:$(PORT)
DURATION ?= 180
export MODELPORT_DATA_DIR MODELPORT_BASE_URL MLFLOW_PORT
# Every process make run starts writes under MODELPORT_DATA_DIR (SQLite, secret key, the
# embedded broker's socket and append-only file, MLflow store, artifacts, logs): the directory
# is private (0700) and each process runs with umask 077, so no other user of the host reads it. Model containers (uid 10001) are
# not affected: the code that bind-mounts a directory into one makes that directory readable
# (registry/sandbox.py, deployments/reconcile.py); a container never walks its host parents.
PRIVATE := umask 077 &&

.PHONY: help install run test lint format migrate data-dir clean-data demo-traffic

help:
	@echo "make run    install (first time), migrate, seed an admin, start the Procfile's processes"
	@echo "           (broker, edge, web, workers, beat, MLflow) under a supervisor that restarts"
	@echo "           any that dies and, unless MODELPORT_DEMO=0, seeds and deploys two demo models"
	@echo "make demo-traffic [DURATION=180]  traffic with drift and ground truth to the demo"
	@echo "make test   lint, then the test suite"
	@echo "make lint   ruff, import contracts (lint-imports), mypy, makemigrations --check,"
	@echo "           manage.py check"

$(VENV)/.installed: requirements/base.txt requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Modelport needs Python 3.11+; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	@touch $@

install: $(VENV)/.installed

# The model frameworks the flavor tests log models with (issue 19): `make test` only.
$(VENV)/.flavors-installed: $(VENV)/.installed requirements/flavors.txt
	$(BIN)/python -m pip install --quiet -r requirements/flavors.txt
	@touch $@

data-dir:
	@$(PRIVATE) mkdir -p "$(MODELPORT_DATA_DIR)/mlflow" "$(MODELPORT_DATA_DIR)/run"
	@chmod 700 "$(MODELPORT_DATA_DIR)"

migrate: install data-dir
	$(PRIVATE) $(BIN)/python manage.py migrate --noinput

run: migrate
	$(PRIVATE) $(BIN)/python manage.py bootstrap
	@echo "Modelport: http://127.0.0.1:$(PORT)/  (API docs: /api/v1/docs/, console: /admin/) — Ctrl-C stops everything"
	$(PRIVATE) MODELPORT_WEB_PORT=$(PORT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m config.supervise \
		--procfile Procfile --once demo --stop-last redis $(if $(REDIS_URL),--skip redis) \
		--metrics-dir "$(MODELPORT_DATA_DIR)/run/prometheus" \
		--on-stop "$(BIN)/python -m config.replicas_left"

demo-traffic: install
	$(PRIVATE) $(BIN)/python manage.py demo_traffic --duration $(DURATION)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run --noinput
	$(BIN)/python manage.py check

test: lint $(VENV)/.flavors-installed
	$(BIN)/python -m pytest

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-data:
	rm -rf "$(MODELPORT_DATA_DIR)"
