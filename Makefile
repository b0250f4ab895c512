# dlbench: `make matrix` runs the benchmark matrix, `make test` runs the tests.
# Both set up what they need (virtualenv, Docker engine, base image, datasets).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: matrix test images report engine datasets cluster clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

engine:
	bash scripts/engine.sh

datasets:
	bash scripts/datasets.sh

# a single-node Slurm and a local image registry (Debian's packages), for --backend slurm and its tests
cluster: engine
	bash scripts/cluster.sh

matrix: venv engine datasets
	$(PY) -m runner $(ARGS)

# DLBENCH_TESTS_STRICT: what this target set up (engine, datasets, the test extra) must be there, so a
# test fails instead of skipping when it is missing (tests/support.py).
test: venv engine datasets cluster
	DLBENCH_TESTS_STRICT=1 $(PY) -m pytest $(ARGS)

images: venv engine
	$(PY) -m runner build $(ARGS)

report: venv
	$(PY) -m runner report --readme README.md $(ARGS)

clean:
	-$(PY) -m runner clean
	rm -rf build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
