# The two commands of the README. Both build everything they need from nothing but
# Python 3.11 and the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck bench clean wheelhouse docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy ccx_agent
	$(BIN)/python -m pytest -q --durations=15

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
