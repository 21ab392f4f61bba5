# make run: the whole stack on this machine.  make test: the test suite.
# Both start local PostgreSQL and Redis unless DATABASE_URL / CELERY_BROKER_URL are set; make run
# keeps its database in .devstack/ (make wipe deletes it), make test throws its servers away.
# Python 3.11, 3.12 or 3.13: `python3` by default; another with PYTHON=, in a venv of its own with
# VENV= (e.g. make test PYTHON=python3.13 VENV=.venv-3.13).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH ?=

.PHONY: run wipe test bench lint format clean openapi compose-check

# The optional OpenTelemetry packages too, so that their test runs.
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-otel.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else "$(PYTHON) is Python %d.%d: make run and make test need 3.11, 3.12 or 3.13 (choose one with PYTHON=)." % sys.version_info[:2])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -r requirements-otel.txt
	touch $@

run: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/devstack.py run

wipe: $(VENV)/.installed
	$(PY) scripts/devstack.py wipe

test: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/devstack.py exec -- $(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/devstack.py exec -- $(PY) -m benchmarks $(BENCH)

# Style, types, the layers (import-linter, pyproject.toml), sizes, and migrations in step with the models.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_SECRET_KEY=lint $(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_sizes.py
	DJANGO_SECRET_KEY=lint PYTHONWARNINGS=ignore::RuntimeWarning $(PY) manage.py makemigrations --check --dry-run
	$(PY) scripts/check_compose.py

# openapi.yaml, the API's contract on file, written anew from the code (a test compares the two).
openapi: $(VENV)/.installed
	DJANGO_SECRET_KEY=openapi $(PY) manage.py spectacular --validate --fail-on-warn --file openapi.yaml

# docker-compose.yml against the Compose Specification's schema, without a Docker engine.
compose-check: $(VENV)/.installed
	$(PY) scripts/check_compose.py

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache artifacts
