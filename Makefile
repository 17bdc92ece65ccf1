# htr-batch: `make run` and `make test` set up everything they need on a fresh machine.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
HTR   := $(VENV)/bin/htr
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT   ?= out

.PHONY: setup apt venv run test test-fast lint infra-check train-default samples bench bench-gpu clean

setup: apt venv

# Debian packages (poppler for PDFs, handwriting fonts for the synthetic engine), only if missing.
apt:
	@missing=$$(for p in $$(grep -v '^\s*#' apt-packages.txt); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The virtualenv, rebuilt when requirements change. torch/torchvision come from the local wheel store.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-fonts.txt requirements-bench.txt requirements-lint.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-bench.txt
	$(PY) -m pip install -q -r requirements-lint.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The main job on the bundled samples with the shipped models: local folder in, local folder out.
run: setup
	$(HTR) run samples/ $(OUT)/

test: setup
	$(PY) -m pytest -q

# The inner loop: everything but the tests marked slow (subprocesses, the moto server, training,
# benchmarks); under a minute on 2 cores.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Lint, format and types (settings in pyproject.toml); CI runs it before the tests.
LINT_PATHS := batch jobs models transforms tests
lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)

# The AWS deployment (infra/): render the template, cfn-lint it, deploy it on moto and test the
# Lambda handlers (no AWS calls). The rendered template is left in $(OUT)/htr-batch.yaml.
infra-check: setup
	$(HTR) deploy-template --out $(OUT)/htr-batch.yaml
	$(VENV)/bin/cfn-lint $(OUT)/htr-batch.yaml
	$(PY) -m pytest -q tests/test_infra.py tests/test_infra_lambda.py

# Reproduce the shipped models from scratch (synthetic data + the real line sets at DATA, fixed
# seeds); CPU, about 5 hours: make train-default DATA=../shared/data/train
DATA ?= ../shared/data/train
train-default: setup
	bash jobs/train_default.sh $(DATA)

# Regenerate the bundled sample documents (deterministic).
samples: setup
	$(PY) -m jobs.make_samples samples/

# Us vs Tesseract and RapidOCR on the same pages (installs the peers; writes BENCHMARKS.md).
bench: setup
	bash jobs/bench.sh

# On a CUDA machine: pages/s, GPU busy fraction and stage times at several batch sizes (< 8 min).
bench-gpu: setup
	bash jobs/bench_gpu.sh

clean:
	rm -rf $(OUT) .pytest_cache
