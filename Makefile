# Everything a fresh machine needs: a virtualenv with the package and its test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PEERS  := .venv-peers

.PHONY: demo test lint clean bench-peers

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

# whylogs and NannyML for bench/throughput.py: they need numpy 1, so a venv of their own (make test never builds it)
bench-peers: $(PEERS)/.installed

$(PEERS)/.installed: bench/peers-requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet -r bench/peers-requirements.txt
	touch $@

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache
