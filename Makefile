# fer-pipeline: `make demo` and `make test` do all the set-up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp
SHARED ?= ../shared/data

.PHONY: setup demo test test-fast bench train evaluate clean help

help:
	@echo "make setup   create/update .venv with every extra (idempotent; quick when nothing changed)"
	@echo "make demo    analyse the sample recordings in examples/ into demo-out/ and print where the reports are"
	@echo "make test    run the whole test suite"
	@echo "make bench   speed benchmarks (benchmarks/README.md)"
	@echo "make train   train the default emotion model (configs/train/fer2013_vgg.yaml; resumable)"

setup: $(STAMP)

# Torch comes from pip (this machine's disk holds torch 2.14.1 + torchvision 0.29.1); uv/poetry would download GBs.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[train,insightface,dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fer-pipeline analyze examples/ --out demo-out; \
	rc=$$?; echo "open demo-out/index.html (reports in demo-out/reports/)"; exit $$rc

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) benchmarks/run.py

train: setup
	$(VENV)/bin/fer-pipeline train --config configs/train/fer2013_vgg.yaml

evaluate: setup
	$(VENV)/bin/fer-pipeline evaluate $(SHARED)/fer2013.zip --split private-test

clean:
	rm -rf demo-out out .pytest_cache
