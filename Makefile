# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   - create .venv, install stn-gluon, train STNNet end to end (runs/demo; run again,
#                 it leaves a finished demo as it is, continues an interrupted one, and puts
#                 another recipe into runs/demo-2, runs/demo-3, ...)
#   make test   - create .venv, install stn-gluon[test], run the tests (with mypy and the docs build)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=

.PHONY: demo test docs install clean

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

test: install
	$(BIN)/python -m mypy
	@$(MAKE) --no-print-directory docs
	$(BIN)/python -m pytest -q tests

# The documentation, built with warnings as errors into a temporary folder outside the checkout and then
# removed; no network is used. To read it: .venv/bin/mkdocs serve (or mkdocs build --site-dir DIR).
docs: install
	@site="$$(mktemp -d)"; $(BIN)/mkdocs build --strict --site-dir "$$site"; rc=$$?; rm -rf "$$site"; exit $$rc

clean:
	rm -rf runs/demo runs/demo-[0-9]* .pytest_cache
