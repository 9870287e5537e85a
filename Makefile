# Two commands do all the set-up on a fresh machine with Python 3.10, 3.11 or 3.12:
#   make demo   - create .venv, install stn-gluon, train STNNet end to end (runs/demo; run again,
#                 it leaves a finished demo as it is, continues an interrupted one, and puts
#                 another recipe into runs/demo-2, runs/demo-3, ...)
#   make test   - create .venv, install stn-gluon[test], run the type checker and the docs build there, then
#                 the whole suite on the main Python (3.11, in .venv; its slow tests as two jobs of their own) and
#                 the suite less its slow tests on the other Pythons of TEST_PYTHONS it finds (in .venv-3.X)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=
# The Pythons `make test` runs the suite on (`make test TEST_PYTHONS=3.12` for one), TEST_JOBS pytests at once
# (the main Python's slow tests are two of them: pytest-slow-a, pytest-slow-b), each with one OpenMP thread when more than one
# runs (two spinning pools on two cores slow both ~10x).
# A Python that is not found is skipped with a note, or is an error where CI is set. PYTEST_ARGS go to each pytest;
# OTHER_PYTEST_ARGS to those of the Pythons other than the main one: by default they leave out the tests marked
# slow (pytest.ini: training runs, subprocesses, servers, the browser), which check behaviour no Python version
# changes, so that CI's three suites fit its time on two cores (`make test OTHER_PYTEST_ARGS=` runs them all).
TEST_PYTHONS ?= 3.10 3.11 3.12
TEST_JOBS ?= 5
PYTEST_ARGS ?=
OTHER_PYTEST_ARGS ?= -m "not slow"
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo "$$HOME/.pyenv")

# The X.Y of $(PYTHON): that version's tests run in $(VENV), the others' in .venv-X.Y
MAIN_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
venv_of = $(if $(filter $(1),$(MAIN_VERSION)),$(VENV),.venv-$(1))
# pythonX.Y that runs: $(PYTHON) for the main version, else the first of PATH's and pyenv's (its shims may not run)
python_of = $(if $(filter $(1),$(MAIN_VERSION)),$(PYTHON),$(firstword $(foreach p,$(shell command -v python$(1)) \
	$(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)),$(shell $(p) -c '' >/dev/null 2>&1 && echo $(p)))))

, := ,
.PHONY: demo test docs install clean pytest-slow pytest-slow-a pytest-slow-b

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# the other Pythons' venvs hold only what pytest needs (the docs tools' pins need Python >= 3.11)
.venv-%/bin/.installed: setup.py
	@py="$(call python_of,$*)"; if [ -z "$$py" ]; then echo "python$* not found (PATH, $(PYENV_ROOT)/versions)"; exit 1; fi; \
	set -x; "$$py" -m venv .venv-$* && .venv-$*/bin/python -m pip install -q --upgrade pip && \
	.venv-$*/bin/python -m pip install -q -e ".[pytest]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

test: install
	$(BIN)/python -m mypy
	@$(MAKE) --no-print-directory docs
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target \
		$(if $(MAIN_TESTED),pytest-slow-a pytest-slow-b SPLIT_MAIN=1) $(addprefix pytest-,$(TEST_PYTHONS)) \
		TEST_OMP=$(if $(filter-out 1,$(TEST_JOBS)),1)

MAIN_TESTED = $(filter $(MAIN_VERSION),$(TEST_PYTHONS))
SLOW_ONLY := -m slow
NOT_SLOW := -m "not slow"
# pytest's selection on Python $(1): the main one runs every test (its fast ones only where SPLIT_MAIN is set:
# `make test` runs the slow ones apart, in pytest-slow), the others OTHER_PYTEST_ARGS
selection = $(if $(filter $(1),$(MAIN_VERSION)),$(if $(SPLIT_MAIN),$(NOT_SLOW)),$(OTHER_PYTEST_ARGS))

# the main Python's slow tests (`make pytest-slow`); `make test` runs them as two jobs beside the other suites,
# those of SLOW_A's files and those of the others (about equal halves of the time)
SLOW_A := tests/test_cli_errors.py tests/test_training.py tests/test_web.py tests/test_runs.py tests/test_serving_hostile.py
pytest-slow: pytest-slow-a pytest-slow-b
pytest-slow-a: install
	@echo "== pytest on Python $(MAIN_VERSION) ($(VENV)$(if $(TEST_OMP),$(,) OMP_NUM_THREADS=$(TEST_OMP)), the slow tests of $(words $(SLOW_A)) files) =="
	@$(if $(TEST_OMP),OMP_NUM_THREADS=$(TEST_OMP)) $(BIN)/python -m pytest -q $(SLOW_A) $(SLOW_ONLY) $(PYTEST_ARGS)
pytest-slow-b: install
	@echo "== pytest on Python $(MAIN_VERSION) ($(VENV)$(if $(TEST_OMP),$(,) OMP_NUM_THREADS=$(TEST_OMP)), the other slow tests) =="
	@$(if $(TEST_OMP),OMP_NUM_THREADS=$(TEST_OMP)) $(BIN)/python -m pytest -q tests $(addprefix --ignore=,$(SLOW_A)) \
		$(SLOW_ONLY) $(PYTEST_ARGS)

# the suite on one Python (`make pytest-3.12`); its venv is made first where it is missing
pytest-%:
	@if [ -z "$(call python_of,$*)" ]; then \
	  echo "make test: python$* not found (PATH, $(PYENV_ROOT)/versions): its tests did not run"; \
	  exit $(if $(CI),1,0); fi
	@$(MAKE) --no-print-directory -s $(call venv_of,$*)/bin/.installed
	@echo "== pytest on Python $* ($(call venv_of,$*)$(if $(TEST_OMP),$(,) OMP_NUM_THREADS=$(TEST_OMP))$(if \
		$(call selection,$*),$(,) $(subst ",',$(call selection,$*)))) =="
	@$(if $(TEST_OMP),OMP_NUM_THREADS=$(TEST_OMP)) $(call venv_of,$*)/bin/python -m pytest -q tests \
		$(call selection,$*) $(PYTEST_ARGS)

# The documentation, built with warnings as errors into a temporary folder outside the checkout and then
# removed; no network is used. To read it: .venv/bin/mkdocs serve (or mkdocs build --site-dir DIR).
docs: install
	@site="$$(mktemp -d)"; $(BIN)/mkdocs build --strict --site-dir "$$site"; rc=$$?; rm -rf "$$site"; exit $$rc

clean:
	rm -rf runs/demo runs/demo-[0-9]* .pytest_cache .venv-[0-9]*
