# The workshop's whole set-up is `make workshop` then `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
# The environments (.venv, .venvs/*): tools/envs.py creates them with uv (pinned in requirements/tools.txt) from
# requirements/*.txt, and leaves one alone while its stamp (.installed-<sha256 of its requirement files>) is current.
ENVS        := $(PYTHON_BASE) tools/envs.py install
# Each phase of `make workshop` and `make test` is timed into build/timings.jsonl (tools/timings.py; `make bench`).
TIMED       := $(PYTHON_BASE) tools/timings.py run
PIP_VERSION := $(shell sed -n 's/^pip==//p' requirements/tools.txt)

.PHONY: help workshop system-deps setup env gateway-env phoenix-env wheelhouse models up down status lab notebooks book test test-unit \
        checkov-env check-manifests test-services test-notebooks test-notebooks-local test-unit-and-eks test-nbval test-book bench bench-readme bench-agent lock reference-env clean eks eks-plan

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

workshop:  ## system packages, set-up, the local stack, every notebook, the book; ends with where the time went
	@mkdir -p build; export WORKSHOP_TIMING_RUN=workshop-$$(date +%Y%m%dT%H%M%S)-$$$$ WORKSHOP_TIMING_KIND=workshop; \
	$(PYTHON_BASE) tools/timings.py begin; \
	$(TIMED) "system packages" -- $(MAKE) --no-print-directory system-deps && \
	$(TIMED) "set-up" -- $(MAKE) --no-print-directory setup && \
	$(TIMED) "stack up" -- $(MAKE) --no-print-directory up && \
	$(TIMED) "notebooks" -- $(MAKE) --no-print-directory notebooks && \
	$(TIMED) "book" -- $(MAKE) --no-print-directory book; rc=$$?; \
	$(PYTHON_BASE) tools/timings.py finish $$rc; \
	if [ -x $(PY) ]; then $(PY) tools/summary.py $$rc; else $(PYTHON_BASE) tools/summary.py $$rc; fi; exit $$rc

system-deps:  ## redis-server and chromium (and a compiler + cmake until the wheel is built): installed, or the line that does
	@$(PYTHON_BASE) tools/system_deps.py

setup:  ## the environments (uv) and the verified models; llama-cpp-python builds alongside when not cached (idempotent)
	@$(ENVS) workshop litellm phoenix --models

wheelhouse:  ## build llama-cpp-python once with explicit CPU flags (no -march=native; AVX-512 where present, never AMX) into the user cache
	@$(PYTHON_BASE) tools/wheelhouse.py

env:  ## the pinned Python environment in .venv (llama-cpp-python from the wheelhouse)
	@$(ENVS) workshop

gateway-env:  ## the LiteLLM proxy's own environment (its deps conflict with strands-agents)
	@$(ENVS) litellm

phoenix-env:  ## Arize Phoenix's own environment (notebook 05's local trace store)
	@$(ENVS) phoenix

checkov-env:  ## checkov's own environment (its large dependency set stays out of .venv; tests/test_checkov.py)
	@$(ENVS) checkov

check-manifests: env  ## every offline check of the rendered manifests, both flavours (schema, policy, Karpenter, CEL, prerequisites)
	@$(PY) -m helpers.infra.manifests check

models: env  ## fetch or assemble the models and verify their checksums
	@$(PY) -m helpers.layers.models fetch

up: env models  ## start the local stack and wait until healthy
	@$(PY) -m helpers.local.stack up

down:  ## stop the local stack (its supervisor first); leaves no process behind
	@if [ -x $(PY) ]; then $(PY) -m helpers.local.stack down; else echo "nothing to stop (no environment)"; fi

status: env  ## show the local services: state, URL, restarts, and the memory of each and of the whole stack
	@$(PY) -m helpers.local.stack status --memory

lab: env  ## open JupyterLab on the notebooks (loopback only)
	@$(VENV)/bin/jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks

notebooks: env  ## execute every notebook in order (TARGET=local) into build/executed/
	@$(PY) tools/run_notebooks.py --out build/executed

book: env  ## build the Jupyter Book from the executed notebooks into build/book/
	@$(PY) tools/build_book.py

test:  ## the whole suite, each phase timed: unit beside the eks notebooks, services, local notebooks (checked as nbval would), book + browser
	@mkdir -p build; export WORKSHOP_TIMING_RUN=test-$$(date +%Y%m%dT%H%M%S)-$$$$ WORKSHOP_TIMING_KIND=test; \
	$(PYTHON_BASE) tools/timings.py begin; \
	$(TIMED) "system packages" -- $(MAKE) --no-print-directory system-deps && \
	$(TIMED) "set-up" -- $(ENVS) workshop litellm phoenix reference checkov --models && \
	$(TIMED) "helm" -- $(MAKE) --no-print-directory helm && \
	$(TIMED) "manifest checks" -- $(MAKE) --no-print-directory check-manifests && \
	$(TIMED) "unit tests + notebooks (eks)" -- $(MAKE) --no-print-directory test-unit-and-eks && \
	$(TIMED) "service tests" -- $(MAKE) --no-print-directory test-services && \
	$(TIMED) "notebooks (local)" -- $(MAKE) --no-print-directory test-notebooks-local && \
	$(TIMED) "book" -- $(MAKE) --no-print-directory book && \
	$(TIMED) "book in Chromium" -- $(MAKE) --no-print-directory test-book; rc=$$?; \
	if [ -x $(PY) ]; then $(PY) -m helpers.local.stack down >/dev/null; fi; \
	$(PYTHON_BASE) tools/timings.py finish $$rc; $(PYTHON_BASE) tools/timings.py show; exit $$rc

helm: env  ## helm v4 + kubectl (x86_64 Linux, sha256-pinned) into .venvs/bin for the chart tests; elsewhere they skip
	@$(PY) tools/helm.py .venvs/bin

UNIT_PASS  := $(PY) -m pytest tests -m "not notebooks and not book and not services" -q --durations=15

test-unit: env  ## the unit tests: no service is started (a test that starts one fails unless marked `services`)
	@$(UNIT_PASS)

test-services: env  ## the tests that start local services (model servers, Ray, the gateway, MCP servers; slow)
	@$(PY) -m pytest tests -m services -q --durations=15

# Each pass is one pytest process that keeps about one core busy; two side by side use both of a 2-core machine.
EKS_PASS   := $(PY) -m pytest tests -m notebooks -k eks_target -q -p no:cacheprovider
LOCAL_PASS := $(PY) -m pytest tests -m notebooks -k "not eks_target" -q -p no:cacheprovider --durations=15
define beside_eks_pass  # run $(1) while the eks pass runs in the background; fail if either fails
	@mkdir -p build; $(EKS_PASS) > build/test-notebooks-eks.log 2>&1 & eks=$$!; \
	$(1); mine=$$?; \
	wait $$eks; e=$$?; echo "--- the eks target (build/test-notebooks-eks.log):"; tail -n 25 build/test-notebooks-eks.log; \
	exit $$(( mine || e ))
endef

test-notebooks: env  ## each notebook once per target, side by side: local (outputs checked as nbval checks them) and eks without a cluster
	$(call beside_eks_pass,$(LOCAL_PASS))

test-notebooks-local: env  ## each notebook once with TARGET=local, its outputs checked against the committed ones as nbval checks them
	@$(LOCAL_PASS)

test-unit-and-eks: env  ## the unit tests, with the eks pass of the notebooks (no cluster, no service) beside them
	$(call beside_eks_pass,$(UNIT_PASS))

test-book: env  ## the built book in headless Chromium: pages render, no broken internal link, screenshot
	@$(PY) -m pytest tests -m book -q

test-nbval: env  ## nbval on its own (re-executes every notebook); `make test` checks the same within its single run
	@$(PY) -m pytest --nbval notebooks --nbval-sanitize-with tests/sanitize.cfg -p no:cacheprovider -q

eks-plan: env  ## offline: render and check every chapter for FLAVOUR, print the ordered plan and the cost per hour
	@$(PY) tools/eks.py plan $(if $(FLAVOUR),--flavour $(FLAVOUR))

eks: env  ## notebooks 01-10 with TARGET=eks against your kubeconfig/AWS profile; billable switches off unless BILLABLE="..."
	@$(PY) tools/eks.py run $(if $(FLAVOUR),--flavour $(FLAVOUR)) $(if $(BILLABLE),--billable $(BILLABLE))

bench: setup  ## measure the figures the issues name (in an isolated stack it stops after; nothing is left running)
	@$(PY) tools/bench.py

bench-readme:  ## write the README's performance table from the last `make bench` (build/bench/report.json)
	@$(PYTHON_BASE) tools/bench_report.py --readme

bench-agent: setup  ## the agent's 20 questions in both routing modes; writes book/measurements/agent-routing.json (notebook 08 shows it)
	@$(PY) tools/bench_agent.py --json book/measurements/agent-routing.json

reference-env:  ## sentence-transformers (CPU torch) for the embedding parity test
	@$(ENVS) reference

lock:  ## re-resolve requirements/workshop.in into requirements/workshop.txt and environment.yml
	@rm -rf build/lock-venv && $(PYTHON_BASE) tools/wheelhouse.py && $(PYTHON_BASE) -m venv build/lock-venv && \
	build/lock-venv/bin/pip install --quiet pip==$(PIP_VERSION) && build/lock-venv/bin/pip install --quiet --only-binary=llama-cpp-python --find-links build/wheelhouse \
	  -r requirements/workshop.in && $(PYTHON_BASE) tools/pins.py lock build/lock-venv/bin/python

clean: down  ## remove build output and environments (keeps the model and wheel cache)
	rm -rf build $(VENV) .venvs
