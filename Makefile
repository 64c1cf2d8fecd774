# The two commands of the README. Both build everything they need from nothing but
# Python 3.11 and the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck bench clean wheelhouse docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package is installed editable, so pip compiles none of it; with
# PYTHONDONTWRITEBYTECODE set no interpreter writes the bytecode either, and every one of
# the hundreds of `python -m ccx_agent` subprocesses of the suite would recompile the package.
# compileall writes the .pyc whatever that variable says; an interpreter started with it
# set still reads them. `test` compiles again: only the files changed since are redone.
COMPILE := $(BIN)/python -m compileall -q ccx_agent tests

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(COMPILE)
	touch $(STAMP)

# Tests run in TEST_WORKERS processes (pytest-xdist): most of the suite's wall time is
# real daemons waiting for their second-scale timers, so more workers than cores pays (on
# 2 cores: 4 workers 143-151 s, 6 workers 132 s, 8 workers 126 s; 6 keeps the load, and
# with it the timing of the daemon drills, moderate; docs/performance.md, "Test suite").
# --dist loadgroup keeps the tests that share one daemon run on one worker (tests/conftest.py).
# PYTHONDONTWRITEBYTECODE is emptied for the run (as compileall ignores it): each worker
# collects the whole suite, and pytest rewrites every test module's asserts again unless
# it may keep the rewritten bytecode (3 s of CPU per worker instead of 1 s).
TEST_WORKERS ?= 6
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ccx_agent
	$(COMPILE)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

demo: $(STAMP)
	$(BIN)/ccx-agent demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ccx_agent

# dist/ccx-agent-wheelhouse-VERSION.tar.gz: the wheel and every dependency's, for an
# offline install (docs/install.md). WHEELHOUSE_PYTHONS="3.12" adds another CPython's.
WHEELHOUSE_PYTHONS ?=
wheelhouse: $(STAMP)
	$(BIN)/python tools/wheelhouse.py --out dist $(foreach v,$(WHEELHOUSE_PYTHONS),--python $(v))

# The man page and the shell completions, generated from the parser (tools/gen_docs.py);
# the example config and the key tables of docs/config.md, from the config schema
# (tools/gen_config.py).
docs: $(STAMP)
	$(BIN)/python tools/gen_docs.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
