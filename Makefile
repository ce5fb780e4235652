# Newcomer entry points: `make demo` and `make test` (each installs first if needed).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/pylon demo --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q -n 2 $(PYTEST_ARGS)

bench: install
	$(PY) bench/model.py
	$(PY) bench/data.py
	$(PY) bench/metrics.py
	$(PY) bench/predict.py
	$(PY) bench/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
