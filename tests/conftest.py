"""Test set-up: simulate 4 CPU devices before anything else touches JAX; cache what XLA compiles.

Compiling, not running, is most of a tiny run's time, and the tests compile the same
programs many times over: every run rebuilds its train, DFT and eval steps as fresh
closures, which ``jax.jit`` cannot recognise, and the same tiny classifier is built by
many tests. JAX's persistent compilation cache recognises them by their program, so
every compile after the first of a program is a file read, in this session and the
next, and in the commands the tests run as subprocesses. It lives in ``.cache/jax`` at
the repository root (ignored by git through its own ``.cache/.gitignore``); set
``JAX_COMPILATION_CACHE_DIR`` to use another folder, or to the empty string to compile
everything afresh.

The tests' programs are tiny, so XLA is asked to compile fast rather than to make fast
code, unless ``XLA_FLAGS`` already says otherwise: ``--xla_cpu_opt_preset=
CPU_OPT_PRESET_FAST_COMPILE`` (the suite ran about a quarter faster from a cold cache)
and LLVM at ``-O1`` instead of XLA's default ``-O3`` (``--xla_backend_optimization_level=1``:
from a cold cache the suite took 383 s instead of 458 s, the same tests passing; random
draws compile several times faster, to the same bits, and the VGG's input gradient came
out bit-identical; ``-O0`` is not used: it gave that gradient NaNs). Both are set in the
environment, so the tests' subprocesses compile the same way.
"""
import os
from pathlib import Path

FAST_COMPILE_FLAGS = {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE",
                      "xla_backend_optimization_level": "1"}
for _flag, _value in FAST_COMPILE_FLAGS.items():
  if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()

import jax  # pylint: disable=wrong-import-position  (after XLA_FLAGS, which JAX reads once)
import pytest  # pylint: disable=wrong-import-position

jax.config.update("jax_num_cpu_devices", 4)

CACHE_ROOT = Path(__file__).resolve().parent.parent / ".cache"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  (CACHE_ROOT / "jax").mkdir(parents=True, exist_ok=True)
  if not (CACHE_ROOT / ".gitignore").exists():
    (CACHE_ROOT / ".gitignore").write_text("# Caches of the test suite (tests/conftest.py).\n*\n")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = str(CACHE_ROOT / "jax")
# Every program, however quick to compile or small: the many small ones add up. Set in
# the environment, so the commands the tests start as subprocesses share the cache too.
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

import numpy as np  # pylint: disable=wrong-import-position

from configs import digits  # pylint: disable=wrong-import-position
from dfm import data  # pylint: disable=wrong-import-position
from dfm.run import methods  # pylint: disable=wrong-import-position


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """Both embedded datasets prepared once, into a temporary directory."""
  root = str(tmp_path_factory.mktemp("data"))
  for name in ("mnist5k", "uci_digits"):
    data.prepare(name, root)
  return root


@pytest.fixture(scope="session")
def classifier_dir(data_dir, tmp_path_factory) -> str:
  """A runlocal classifier trained on mnist5k once per test process (for DFT on uci_digits)."""
  workdir = tmp_path_factory.mktemp("classifier")
  config = digits.get_config("mnist5k,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
  results = methods.train_classifier(config, str(workdir))
  test = data.open_split("mnist5k", "test", data_dir)
  labels = next(data.iterate_eval_batches(test, batch_size=len(test)))["label"]
  majority = np.bincount(labels).max() / len(labels)  # 10%: the digits are balanced.
  # Its one runlocal epoch learns something: 23-30% on test for seeds 0-2.
  assert results["test"]["accuracy"] >= majority + 0.1
  return str(workdir)
