# The workshop's whole set-up is `make workshop` then `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed-$(shell cat requirements/workshop.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check
REFERENCE   := .venvs/reference
LITELLM     := .venvs/litellm
LITELLM_STAMP := $(LITELLM)/.installed-$(shell sha256sum requirements/litellm.txt 2>/dev/null | cut -c1-12)
PHOENIX     := .venvs/phoenix
PHOENIX_STAMP := $(PHOENIX)/.installed-$(shell sha256sum requirements/phoenix.txt 2>/dev/null | cut -c1-12)
TIMINGS     := build/timings.jsonl
PIP_VERSION := 25.3

.PHONY: help workshop setup env gateway-env phoenix-env wheelhouse models up down status lab notebooks book test test-unit \
        test-services test-notebooks test-nbval test-book bench lock reference-env clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

workshop:  ## set up everything, start the local stack, run every notebook, build the book
	@mkdir -p build; start=$$(date +%s); \
	$(MAKE) --no-print-directory setup && setup_done=$$(date +%s) && \
	$(MAKE) --no-print-directory up notebooks book && end=$$(date +%s) && \
	echo "{\"event\": \"workshop\", \"setup_s\": $$((setup_done-start)), \"total_s\": $$((end-start))}" >> $(TIMINGS) && \
	$(PY) tools/summary.py

setup: env gateway-env phoenix-env models  ## environments + verified models (idempotent)

wheelhouse:  ## build llama-cpp-python once, portably (no -march=native), into the user cache
	@$(PYTHON_BASE) tools/wheelhouse.py

$(STAMP): requirements/workshop.txt pyproject.toml
	@$(PYTHON_BASE) tools/wheelhouse.py
	@test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	@$(PIP_INSTALL) pip==$(PIP_VERSION)
	@echo "env: installing the pinned set from requirements/workshop.txt into $(VENV)"
	@$(PIP_INSTALL) --only-binary=llama-cpp-python --find-links build/wheelhouse -r requirements/workshop.txt
	@$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*; touch $@

env: $(STAMP)  ## the pinned Python environment in .venv

$(LITELLM_STAMP): requirements/litellm.txt
	@test -x $(LITELLM)/bin/python || $(PYTHON_BASE) -m venv $(LITELLM)
	@echo "env: installing the LiteLLM proxy's own pinned set (requirements/litellm.txt) into $(LITELLM)"
	@$(LITELLM)/bin/pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	@$(LITELLM)/bin/pip install --quiet --disable-pip-version-check -r requirements/litellm.txt
	@rm -f $(LITELLM)/.installed-*; touch $@

gateway-env: $(LITELLM_STAMP)  ## the LiteLLM proxy's own environment (its deps conflict with strands-agents)

$(PHOENIX_STAMP): requirements/phoenix.txt
	@test -x $(PHOENIX)/bin/python || $(PYTHON_BASE) -m venv $(PHOENIX)
	@echo "env: installing Arize Phoenix's own pinned set (requirements/phoenix.txt) into $(PHOENIX)"
	@$(PHOENIX)/bin/pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	@$(PHOENIX)/bin/pip install --quiet --disable-pip-version-check -r requirements/phoenix.txt
	@rm -f $(PHOENIX)/.installed-*; touch $@

phoenix-env: $(PHOENIX_STAMP)  ## Arize Phoenix's own environment (notebook 05's local trace store)

models: env  ## fetch or assemble the models and verify their checksums
	@$(PY) -m helpers.layers.models fetch

up: env models  ## start the local stack and wait until healthy
	@$(PY) -m helpers.local.stack up

down:  ## stop the local stack; leaves no process behind
	@if [ -x $(PY) ]; then $(PY) -m helpers.local.stack down; else echo "nothing to stop (no environment)"; fi

status: env  ## show the local services, their state and URLs
	@$(PY) -m helpers.local.stack status

lab: env  ## open JupyterLab on the notebooks (loopback only)
	@$(VENV)/bin/jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks

notebooks: env  ## execute every notebook in order (TARGET=local) into build/executed/
	@$(PY) tools/run_notebooks.py --out build/executed

book: env  ## build the Jupyter Book from the executed notebooks into build/book/
	@$(PY) tools/build_book.py

test: setup reference-env  ## the whole suite: unit, services, notebooks under papermill, nbval, book + browser check
	@$(MAKE) --no-print-directory test-unit test-services test-notebooks test-nbval book test-book; rc=$$?; \
	$(PY) -m helpers.local.stack down >/dev/null; exit $$rc

test-unit: env  ## the unit tests: no service is started (a test that starts one fails unless marked `services`)
	@$(PY) -m pytest tests -m "not notebooks and not book and not services" -q

test-services: env  ## the tests that start local services (model servers, Ray, the gateway, MCP servers; slow)
	@$(PY) -m pytest tests -m services -q

test-notebooks: env
	@$(PY) -m pytest tests -m notebooks -q

test-book: env  ## the built book in headless Chromium: pages render, no broken internal link, screenshot
	@$(PY) -m pytest tests -m book -q

test-nbval: env
	@$(PY) -m pytest --nbval notebooks --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider -q

bench: setup  ## measure the figures the issues name (ratios against a baseline in the same run)
	@$(PY) tools/bench.py

reference-env:  ## sentence-transformers (CPU torch) for the embedding parity test
	@test -f $(REFERENCE)/.installed || ( $(PYTHON_BASE) -m venv $(REFERENCE) && \
	  $(REFERENCE)/bin/pip install --quiet pip==$(PIP_VERSION) && $(REFERENCE)/bin/pip install --quiet --disable-pip-version-check -r requirements/reference.txt && \
	  touch $(REFERENCE)/.installed )

lock:  ## re-resolve requirements/workshop.in into requirements/workshop.txt and environment.yml
	@rm -rf build/lock-venv && $(PYTHON_BASE) tools/wheelhouse.py && $(PYTHON_BASE) -m venv build/lock-venv && \
	build/lock-venv/bin/pip install --quiet pip==$(PIP_VERSION) && build/lock-venv/bin/pip install --quiet --only-binary=llama-cpp-python --find-links build/wheelhouse \
	  -r requirements/workshop.in && $(PYTHON_BASE) tools/pins.py lock build/lock-venv/bin/python

clean: down  ## remove build output and environments (keeps the model and wheel cache)
	rm -rf build $(VENV) .venvs
