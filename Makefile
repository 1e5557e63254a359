# make demo: set up .venv and run DFT end to end offline (train a VGG on MNIST, adapt UCI digits to it).
# make test: set up .venv with the test extra and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data
DEMO := runs/demo

.PHONY: demo test bench clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m experiments.prepare --dataset=mnist5k --data_dir=$(DATA)
	$(PY) -m experiments.prepare --dataset=uci_digits --data_dir=$(DATA)
	$(PY) -m experiments.train_classifier --config=configs/digits.py:mnist5k --workdir=$(DEMO)/classifier \
	  --config.data_dir=$(DATA)
	$(PY) -m experiments.dft --config=configs/digits.py:mnist5k_to_uci --workdir=$(DEMO)/dft \
	  --config.data_dir=$(DATA) --config.classifier_dir=$(DEMO)/classifier

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) -m experiments.benchmark
