# The two commands: `make demo` (quickstart end to end) and `make test` (the test suite).
# Both create .venv and install the project into it when missing.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Use the bundled MedMNIST files when this checkout sits beside them; otherwise ~/.medmnist (downloaded on demand).
MEDMNIST_ROOT ?= $(if $(wildcard ../shared/data/medmnist/*.npz),$(abspath ../shared/data/medmnist),)
export MEDMNIST_ROOT

.PHONY: demo test lint install

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		scripts/finetune.py configs/quickstart.yaml

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
