# Two commands on a fresh machine with Python 3.11 and pip: `make demo`, `make test`.
# .venv is built on first use and rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned: this CPU build installs from local disk; an unpinned torch pulls CUDA.
TORCH := torch==2.13.0

.PHONY: demo test test-fast bench lint browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[engine,ray,dev]"
	touch $(STAMP)

# Headless Chromium for the HTML report test (Debian package).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(VENV)/bin/tailclip demo

test: $(STAMP) browser
	$(PY) -m pytest -q -n 2

test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/optim_step.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
