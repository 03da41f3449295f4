# `make test` is what CI runs; `make check` adds formatting, lint and types.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test check lint typecheck format bench serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The HTTP API on http://127.0.0.1:8000, with the embedded Redis (data in ./.coda, kept).
serve: $(STAMP)
	$(VENV)/bin/coda serve

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/append.py
	$(PY) bench/encoding.py
	$(PY) bench/replay.py
	$(PY) bench/consume.py
	$(PY) bench/classify.py
	$(PY) bench/turn.py
	$(PY) bench/http_turn.py
	$(PY) bench/fanout.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
