# Two commands on a fresh machine: `make app` and `make test` (both create .venv and install first).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vitlens-installed
APT_PACKAGES := dataset-fashion-mnist chromium fonts-dejavu-core libgl1 libglib2.0-0

.PHONY: venv system-deps test app bench bench-gpu mutation clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests use: Fashion-MNIST's IDX files, Chromium for the browser tests and PNG export, and the
# GL and GLib libraries OpenCV (under Quantus) loads.
system-deps:
	@if [ -d /usr/share/datasets/fashion-mnist ] && [ -x /usr/bin/chromium ] && /sbin/ldconfig -p | grep -q libGL.so.1 \
	    && /sbin/ldconfig -p | grep -q libglib-2.0.so.0; then exit 0; fi; \
	if command -v apt-get >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); \
	else \
	  echo "apt-get not found: install Fashion-MNIST (or set VITLENS_DATA) and Chromium yourself; see README"; \
	fi

test: venv system-deps
	$(PY) -m pytest

app: venv
	$(VENV)/bin/vitlens app

bench: venv system-deps
	@for script in analyses/benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# On a CUDA machine: the GPU tests, benchmarks and profiles in one go (logs in gpu-checks/).
bench-gpu: venv
	PYTHON=$(PY) analyses/benchmarks/gpu_checks.sh gpu-checks

# Mutation testing (not part of `make test`; hours on 2 cores): mutmut mutates vitlens/analysis, vitlens/bias,
# vitlens/capture.py and the ViT's layers in a copy under mutants/ ([tool.mutmut] in pyproject.toml), then the score
# and the survivors go to analyses/benchmarks/results/. MUTANTS="vitlens.analysis.rollout.*" runs a part of it.
MUTATION_CHILDREN ?= 2
MUTANTS ?=
mutation: venv
	nice -n 15 $(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(PY) analyses/benchmarks/mutation_report.py

clean:
	rm -rf $(VENV) mutants .pytest_cache build *.egg-info
