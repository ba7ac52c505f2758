# Two commands do all set-up on a fresh machine with python3.11 and git:
#   make demo   - create .venv, install derive, train the two-circles classifier
#   make test   - create .venv, install derive with test extras, run pytest
#   make bench  - also install PyTorch 2.13.0 and JAX, compare training speed
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint generated clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# --no-compile: pip would byte-compile every installed file (torch's thousands:
# 67 s instead of 23 s here); Python compiles the modules imported, on first use.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/derive demo --out-dir $(VENV)/demo

# Two pytest workers (pytest-xdist): the suite is mostly single-threaded Numba
# compiles, so each core takes one; they share the module cache on disk.
# Two tiers: float64 code compiles without fast-math, so LLVM's optimization
# level does not change its results, and most tests compile at NUMBA_OPT=0 (the
# quickest compile; in fresh clones that tier took 379-463 s, at
# NUMBA_OPT=1 525 s, and all of make test 8:08-9:16 instead of 10:16). At 0
# Numba writes no cache for kernels that call other jitted functions, so each
# process compiles what it uses, and the tests of the cache and the sweep's Dask
# workers run at 1 (tests/numba_env.py). The tests marked `optimized` check
# float32 fast-math code, whose sums LLVM may reorder differently per level, at
# Numba's default level, as users run it. Plain `pytest` runs everything at the
# default.
test: $(VENV)/.installed
	NUMBA_OPT=0 $(BIN)/python -m pytest -q -n 2 --dist worksteal -m 'not optimized'
	env -u NUMBA_OPT $(BIN)/python -m pytest -q -n 2 --dist worksteal -m optimized

$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test,bench]'
	touch $@

# ARGS=--quick for a run under 2.5 minutes
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerate the checked-in modules of the shipped examples.
generated: $(VENV)/.installed
	for spec in examples/*.toml; do $(BIN)/derive generate $$spec --force || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
