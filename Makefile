# The two commands a newcomer needs. Both install what they need into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench

install:
	bash scripts/install.sh

# The main job on the offline defaults: dataset statistics, saved candidate sets, baselines.
demo: install
	$(VENV)/bin/lmrec demo

# The test suite (unit tests and the slow real-data tests), plus the lint checks.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
