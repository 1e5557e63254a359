r"""Speed of the DFT step for the demo's model at batch 800; prints one JSON object.

  python -m experiments.benchmark                      # or: make bench
  python -m experiments.benchmark --config=configs/digits.py:mnist5k_to_uci --repeats=20

Figures (all medians over --repeats):
  step_ms        one jitted DFT update (perturb, forward, hinge + appearance, noise
                 gradient, Adam)
  floor_ms       one jitted forward plus input-gradient of the frozen classifier on
                 the same batch, with the same compiler options: the least a step
                 can cost
  ratio          step_ms / floor_ms (target <= 1.15)
  compiles       compilations of the step after one full epoch of the real loader,
                 whose last batch is padded (target 1)
  pipeline_examples_per_s / step_examples_per_s   the input pipeline against the
                 step's consumption (target >= 2x)
  torch_step_ms  the same step written plainly in PyTorch eager on the same
                 architecture, when torch is installed (`pip install -e '.[bench]'`)
The embedded datasets are prepared into --config.data_dir if they are not yet.

  python -m experiments.benchmark --memory --memory_data_dir=/tmp/dfm_memory

prints instead the peak RSS (MB) of one DFT epoch and one evaluation pass on synthetic
datasets of 10,000 and 100,000 RGB 64x64 images, prepared once into --memory_data_dir
(0.9 GB) and reused (dfm.studies.memory_benchmark; target: 100k within 1.2x of 10k).
"""
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from dfm import data, models
from dfm.dft import init_state, make_update_step
from dfm.optim import make_optimizer
from dfm.parallel import jit_step
from dfm.studies import memory_benchmark
from dfm.xla import compiler_options
from experiments.cli import quiet_library_logs, run_app

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/digits.py:mnist5k_to_uci", "DFT config whose model and data to time.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repetitions of each figure.")
_MEMORY = flags.DEFINE_bool("memory", False, "Peak host memory against dataset size instead.")
_MEMORY_DATA_DIR = flags.DEFINE_string("memory_data_dir", "data/memory",
                                       "Where --memory prepares (and reuses) its datasets.")


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def _torch_step_ms(config, batch, repeats: int) -> float | None:
  try:
    from experiments import torch_reference  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  model = torch_reference.torch_vgg(config.model.blocks, config.model.dense,
                                    config.model.num_classes, tuple(config.model.input_shape))
  return torch_reference.time_torch_dft_step(
      model, np.asarray(batch["image"]), np.asarray(batch["label"]),
      lam=config.dft.lam, lr=config.dft.lr, repeats=repeats)


def benchmark(config, repeats: int) -> dict:
  """Measures the figures listed in the module docstring."""
  data.prepare(config.dft.dataset, config.data_dir)
  source = data.open_split(config.dft.dataset, "train", config.data_dir)
  module = models.build_classifier(config.model)
  apply_fn = models.make_apply_fn(module)
  params = jax.device_put(models.init_params(module, tuple(config.model.input_shape), config.seed))
  optimizer = make_optimizer(config.dft.optimizer, config.dft.lr)
  step = jit_step(make_update_step(apply_fn, optimizer, lam=config.dft.lam,
                                   transform=config.dft.transform,
                                   class_term=config.dft.class_term))
  loader = data.make_train_loader(source, batch_size=config.dft.batch_size, seed=0, num_epochs=2)
  batch = next(loader)
  torch_ms = _torch_step_ms(config, batch, repeats)  # First: torch and XLA threads contend.
  state = init_state(jnp.zeros(tuple(config.model.input_shape), jnp.float32), optimizer)

  def one_step():
    nonlocal state
    state, metrics = step(state, params, batch)
    return metrics

  floor = jax.jit(lambda p, x: jax.grad(lambda x: apply_fn(p, x).sum())(x),
                  compiler_options=compiler_options())
  step_ms = _median_ms(one_step, repeats)
  floor_ms = _median_ms(lambda: floor(params, batch["image"]), repeats)
  for _ in range(data.num_batches(len(source), config.dft.batch_size)):
    epoch_batch = next(loader)
    for _ in range(config.dft.updates_per_batch):
      state, _ = step(state, params, epoch_batch)
  pipeline = data.make_train_loader(source, batch_size=config.dft.batch_size, seed=1,
                                    num_epochs=20)
  return {
      "device": jax.devices()[0].device_kind,
      "batch_size": config.dft.batch_size,
      "model": config.model.preset,
      "step_ms": round(step_ms, 1),
      "floor_ms": round(floor_ms, 1),
      "ratio": round(step_ms / floor_ms, 3),
      "compiles": step._cache_size(),  # pylint: disable=protected-access
      "pipeline_examples_per_s": round(data.measure_throughput(pipeline, num_batches=20)),
      "step_examples_per_s": round(config.dft.batch_size / step_ms * 1000),
      "torch_step_ms": None if torch_ms is None else round(torch_ms, 1),
  }


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  if _MEMORY.value:
    print(json.dumps(memory_benchmark.measure(_MEMORY_DATA_DIR.value)))
    return
  print(json.dumps(benchmark(_CONFIG.value, _REPEATS.value)))


if __name__ == "__main__":
  run_app(main)
