# Newcomer entry points: `make demo` and `make test` (each installs first if needed).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

# Real components the tests start (a browser, a DICOM validator, a PACS): package:file pairs.
SYSTEM_DEPS := chromium:/usr/bin/chromium dicom3tools:/usr/bin/dciodvfy \
	orthanc:/usr/sbin/Orthanc orthanc-dicomweb:/usr/share/orthanc/plugins/libOrthancDicomWeb.so

.PHONY: install system demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Debian packages the tests need, installed where missing (as root; otherwise a clear message).
system:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
		test -e "$${dep#*:}" || missing="$$missing $${dep%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:$$missing"; \
			apt-get update -q >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
		else \
			echo "make test needs the Debian packages$$missing: run 'sudo apt-get install -y$$missing'"; \
			exit 1; \
		fi; \
	fi

demo: install
	$(VENV)/bin/pylon demo --out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# --dist loadfile: a test file runs on one worker, so its module fixtures (a trained run, a PACS,
# a browser page) are built once and its tests run in order
test: lint system
	$(VENV)/bin/pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

bench: install system
	$(PY) bench/model.py
	$(PY) bench/data.py
	$(PY) bench/metrics.py
	$(PY) bench/predict.py
	$(PY) bench/benchmark.py
	$(PY) bench/viewer.py
	$(PY) bench/pacs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
