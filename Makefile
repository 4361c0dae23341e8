# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the tests).
# Both create .venv when it is missing and install the project into it with constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output

.PHONY: install demo test test-all bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/bluesky-ptychonn demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ''

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps ptychi==2.2.0
	$(BIN)/bluesky-ptychonn bench all --json benchmarks/results

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python tests/lint/check_layers.py src

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info src/*.egg-info
