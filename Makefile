# make run: the whole stack on this machine.  make test: the test suite.  make test-fast: its part
# that starts no process of the service, in under a minute.
# All start local PostgreSQL and Redis unless DATABASE_URL / CELERY_BROKER_URL are set; make run
# keeps its database in .devstack/ (make wipe deletes it), the tests throw their servers away.
# Python 3.11, 3.12 or 3.13: `python3` by default; another with PYTHON=, in a venv of its own with
# VENV= (e.g. make test PYTHON=python3.13 VENV=.venv-3.13).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH ?=
# Material for MkDocs prints a notice about its end of life (May 2027) at every build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

.PHONY: run wipe test test-fast bench lint docs format clean openapi compose-check

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

# The split is the pytest marker `processes` (pyproject.toml): a test that uses the worker cluster or
# the web server (the fixtures cluster, engine and web of tests/conftest.py) gets it automatically;
# one that starts workers, uvicorn, a manage.py or celery command or a stack itself carries it in its
# module (pytestmark) or on its function. Everything else runs here, the engine's decisions included:
# tests/execution/engine/ and tests/approvals/ call the engine in this process against real
# PostgreSQL, with the messages it sends captured where canvas.py sends them (tests/support/outbox.py).
test-fast: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/devstack.py exec -- $(PY) -m pytest -m "not processes" $(PYTEST_ARGS)

bench: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) scripts/devstack.py exec -- $(PY) -m benchmarks $(BENCH)

# Style, types, the layers (import-linter, pyproject.toml), modules cut along concepts (scripts/check_sizes.py),
# migrations in step with the models, risky code (bandit), known vulnerabilities of the pinned requirements
# (skipped, saying so, without a network), and the manual built strictly (a broken link fails).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_SECRET_KEY=lint $(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_sizes.py
	DJANGO_SECRET_KEY=lint PYTHONWARNINGS=ignore::RuntimeWarning $(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/bandit --quiet --configfile pyproject.toml --recursive api approvals cli common config desk execution plans scripts
	$(PY) scripts/audit.py
	$(PY) scripts/check_compose.py
	$(MKDOCS) build --strict

# The manual (docs/, mkdocs.yml) as a site in site/: open site/index.html.
docs: $(VENV)/.installed
	$(MKDOCS) build --strict

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
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache artifacts site
