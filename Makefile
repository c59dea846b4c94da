# Everything a fresh machine needs: a virtualenv with the package and its test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/driftstream demo

test: $(STAMP)
	bash tests/system-packages.sh
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check streams detectors tests bench docs/examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache
