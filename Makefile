# The two set-up commands: `make run` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench export-c clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,examples,mpi]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) examples/main.py

test: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) -m nnjit.cli bench

# AOT: export the digits MLP to a shared library, build a C program against it and run it.
export-c: $(STAMP)
	$(MAKE) -C examples/export_c PYTHON=$(abspath $(PY)) run

clean:
	rm -rf $(VENV) nnjit-out build *.egg-info examples/export_c/build
