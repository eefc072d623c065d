# fer-pipeline: `make demo` and `make test` do all the set-up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp
SHARED ?= ../shared/data
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup chromium demo test test-fast screenshots bench train evaluate clean help

help:
	@echo "make setup   create/update .venv with every extra (idempotent; quick when nothing changed)"
	@echo "make demo    analyse the sample recordings in examples/ into demo-out/ and print where the reports are"
	@echo "make test    run the whole test suite (browser tests need Debian's chromium: setup installs it as root)"
	@echo "make screenshots  render sample reports in headless chromium into docs/screenshots/"
	@echo "make bench   speed benchmarks (benchmarks/README.md)"
	@echo "make train   train the default emotion model (configs/train/fer2013_vgg.yaml; resumable)"

setup: $(STAMP) chromium

# Browser tests (tests/test_browser.py) drive Debian's chromium through Playwright's Python client; never
# `playwright install` (it downloads browsers). Installed here when missing and we are root (CI runs as root).
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "warning: $(CHROMIUM) not found; the browser tests will fail: sudo apt-get install chromium"; \
	  fi; \
	fi

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

screenshots: setup
	FER_SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest -q tests/test_browser.py

bench: setup
	$(PY) benchmarks/run.py

train: setup
	$(VENV)/bin/fer-pipeline train --config configs/train/fer2013_vgg.yaml

evaluate: setup
	$(VENV)/bin/fer-pipeline evaluate $(SHARED)/fer2013.zip --split private-test

clean:
	rm -rf demo-out out .pytest_cache
