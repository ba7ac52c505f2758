# Two commands do all set-up on a fresh machine with python3.11 and git:
#   make demo   - create .venv, install derive, explain + generate + check an example
#   make test   - create .venv, install derive with test extras, run pytest
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint generated clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/derive demo --out-dir $(VENV)/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Regenerate the checked-in modules of the shipped examples.
generated: $(VENV)/.installed
	for spec in examples/*.toml; do $(BIN)/derive generate $$spec --force || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
