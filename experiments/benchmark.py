r"""Speed of the DFT step for the demo's model at batch 800; prints one JSON object.

  python -m experiments.benchmark                      # or: make bench
  python -m experiments.benchmark --config=configs/digits.py:mnist5k_to_uci --repeats=20
  python -m experiments.benchmark --vmap_batch=100     # K settings at a small batch each
  python -m experiments.benchmark --torch=eager        # skip torch.compile (~40 s)

Figures (all medians over --repeats):
  step_ms        one jitted DFT update (perturb, forward, hinge + appearance, noise
                 gradient, Adam)
  floor_ms       one jitted forward plus input-gradient of the frozen classifier on
                 the same batch, with the same compiler options: the least a step
                 can cost
  ratio          step_ms / floor_ms (target <= 1.15)
  step_gflop     floating-point operations of one step, by XLA's cost analysis of
                 the compiled step, in 10^9
  step_gflops    step_gflop / step time: the step's arithmetic rate
  matmul_gflops  the rate of a jitted 2048x2048 float32 matmul in the same process:
                 what this machine's matrix units give at best
  compiles       compilations of the step after one full epoch of the real loader,
                 whose last batch is padded (target 1)
  pipeline_examples_per_s / step_examples_per_s   the input pipeline against the
                 step's consumption (target >= 2x)
  vmap_k, vmap_batch, vmap_speedup   K (lam, lr) settings: K jitted steps one after
                 the other over one jitted step vmapped over the K stacked states
                 (dfm.dft.make_stacked_update_step), all on the same batch of
                 vmap_batch examples
  torch_step_ms  the same step written plainly in PyTorch eager on the same
                 architecture, when torch is installed (`pip install -e '.[bench]'`)
  torch_compile_step_ms, torch_compile_s   that step under torch.compile, and the
                 seconds of its first call apart: the compilation, from scratch
                 (inductor's on-disk caches off)
The PyTorch steps run first, before XLA's threads exist: the two contend.
The embedded datasets are prepared into --config.data_dir if they are not yet.

  python -m experiments.benchmark --memory --memory_data_dir=/tmp/dfm_memory

prints instead the peak RSS (MB) of one DFT epoch and one evaluation pass on synthetic
datasets of 10,000 and 100,000 RGB 64x64 images, prepared once into --memory_data_dir
(0.9 GB) and reused (dfm.studies.memory_benchmark; target: 100k within 1.2x of 10k).
"""
import functools
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from dfm import data, models
from dfm.dft import init_stacked_state, init_state, make_stacked_update_step, make_update_step
from dfm.optim import make_optimizer
from dfm.parallel import jit_step
from dfm.studies import memory_benchmark
from dfm.types import Batch, PyTree
from dfm.xla import compiler_options
from experiments.cli import quiet_library_logs, run_app

TORCH_FIGURES = ("none", "eager", "compile")

def _median_ms(fn: Callable[[], object], repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def _torch_figures(config, batch: Batch, repeats: int, torch: str) -> dict:
  """The ``torch_*`` figures that ``torch`` (one of ``TORCH_FIGURES``) asks for."""
  if torch == "none":
    return {}
  try:
    from experiments import torch_reference  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {"torch_step_ms": None}

  def make_step(compile_it: bool) -> Callable[[], None]:
    model = torch_reference.torch_vgg(config.model.blocks, config.model.dense,
                                      config.model.num_classes, tuple(config.model.input_shape))
    return torch_reference.make_torch_dft_step(
        model, np.asarray(batch["image"]), np.asarray(batch["label"]),
        lam=config.dft.lam, lr=config.dft.lr, compiled=compile_it)

  figures = {"torch_step_ms": round(_median_ms(make_step(False), repeats), 1)}
  if torch == "compile":
    step, start = make_step(True), time.perf_counter()
    step()  # Compiles: the step's two graphs (forward; backward and Adam), once.
    figures["torch_compile_s"] = round(time.perf_counter() - start, 1)
    figures["torch_compile_step_ms"] = round(_median_ms(step, repeats), 1)
  return figures


def _matmul_gflops(size: int, repeats: int) -> float:
  """GFLOP/s of a jitted ``size``-square float32 matmul (``2 size^3`` FLOPs)."""
  a, b = jax.random.normal(jax.random.key(0), (2, size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul, compiler_options=compiler_options())
  return 2 * size**3 / _median_ms(lambda: matmul(a, b), repeats) / 1e6


def _step_gflop(update_step, state: PyTree, params: PyTree, batch: Batch) -> float:
  """GFLOP of ``update_step`` compiled as the runs compile it, by XLA's cost analysis."""
  compiled = jax.jit(update_step, compiler_options=compiler_options()).lower(
      state, params, batch).compile()
  return compiled.cost_analysis()["flops"] / 1e9


def _vmap_speedup(config, apply_fn, params: PyTree, source, *, k: int, batch_size: int,
                  repeats: int) -> float:
  """Time of K steps one after the other over one K-vmapped step, all on one batch
  of ``batch_size`` examples of ``source``; the K (lam, lr) span 100x and 10x around
  the config's."""
  batch = jax.device_put(next(data.make_train_loader(source, batch_size=batch_size, seed=0,
                                                     num_epochs=1)))
  lams = config.dft.lam * np.geomspace(0.1, 10, k)
  lrs = config.dft.lr * np.geomspace(0.3, 3, k)
  optimizer_of = functools.partial(make_optimizer, config.dft.optimizer)
  options = {"transform": config.dft.transform, "class_term": config.dft.class_term}
  shape = tuple(config.model.input_shape)
  steps = [jit_step(make_update_step(apply_fn, optimizer_of(lr), lam=lam, **options))
           for lam, lr in zip(lams, lrs)]
  # One noise array each: a step consumes (donates) its state.
  states = [init_state(jnp.zeros(shape), optimizer_of(lr)) for lr in lrs]
  stacked = jit_step(make_stacked_update_step(apply_fn, optimizer_of, lams=lams, lrs=lrs,
                                              **options))
  stacked_state = init_stacked_state(jnp.zeros(shape), optimizer_of, lrs)

  def one_after_another():
    for index, step in enumerate(steps):
      states[index], _ = step(states[index], params, batch)
    return states

  def vmapped():
    nonlocal stacked_state
    stacked_state, _ = stacked(stacked_state, params, batch)
    return stacked_state

  return _median_ms(one_after_another, repeats) / _median_ms(vmapped, repeats)


def _counting_traces(update_step) -> tuple[Callable, list[int]]:
  """``update_step`` that counts its traces (one per compilation) in the returned list."""
  traces = [0]

  def counted(*args):
    traces[0] += 1
    return update_step(*args)

  return counted, traces


def benchmark(config, *, repeats: int, vmap_k: int = 8, vmap_batch: int = 0,
              torch: str = "compile", matmul_size: int = 2048) -> dict:
  """Measures the figures listed in the module docstring (``matmul_gflops`` on a
  ``matmul_size``-square matmul)."""
  data.prepare(config.dft.dataset, config.data_dir)
  source = data.open_split(config.dft.dataset, "train", config.data_dir)
  module = models.build_classifier(config.model)
  apply_fn = models.make_apply_fn(module)
  params = jax.device_put(models.init_params(module, tuple(config.model.input_shape), config.seed))
  optimizer = make_optimizer(config.dft.optimizer, config.dft.lr)
  update_step = make_update_step(apply_fn, optimizer, lam=config.dft.lam,
                                 transform=config.dft.transform, class_term=config.dft.class_term)
  counted_step, traces = _counting_traces(update_step)
  step = jit_step(counted_step)
  loader = data.make_train_loader(source, batch_size=config.dft.batch_size, seed=0, num_epochs=2)
  batch = jax.device_put(next(loader))
  torch_figures = _torch_figures(config, batch, repeats, torch)
  state = init_state(jnp.zeros(tuple(config.model.input_shape), jnp.float32), optimizer)
  step_gflop = _step_gflop(update_step, state, params, batch)

  def one_step():
    nonlocal state
    state, metrics = step(state, params, batch)
    return metrics

  floor = jax.jit(lambda p, x: jax.grad(lambda x: apply_fn(p, x).sum())(x),
                  compiler_options=compiler_options())
  step_ms = _median_ms(one_step, repeats)
  floor_ms = _median_ms(lambda: floor(params, batch["image"]), repeats)
  matmul_gflops = _matmul_gflops(matmul_size, repeats)
  vmap_batch = vmap_batch or config.dft.batch_size
  vmap_speedup = _vmap_speedup(config, apply_fn, params, source, k=vmap_k,
                               batch_size=vmap_batch, repeats=repeats)
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
      "step_gflop": round(step_gflop, 2),
      "step_gflops": round(step_gflop / step_ms * 1000, 1),
      "matmul_gflops": round(matmul_gflops, 1),
      "compiles": traces[0],
      "pipeline_examples_per_s": round(data.measure_throughput(pipeline, num_batches=20)),
      "step_examples_per_s": round(config.dft.batch_size / step_ms * 1000),
      "vmap_k": vmap_k,
      "vmap_batch": vmap_batch,
      "vmap_speedup": round(vmap_speedup, 2),
      **torch_figures,
  }


def main() -> None:
  """Defines the flags (here, so that importing this module defines none) and runs."""
  config = config_flags.DEFINE_config_file(
      "config", "configs/digits.py:mnist5k_to_uci", "DFT config whose model and data to time.")
  repeats = flags.DEFINE_integer("repeats", 10, "Timed repetitions of each figure.")
  vmap_k = flags.DEFINE_integer("vmap_k", 8, "Settings (lam, lr) of the vmap figure.",
                                lower_bound=1)
  vmap_batch = flags.DEFINE_integer(
      "vmap_batch", 0, "Examples per setting in the vmap figure; 0: config.dft.batch_size. "
      "Accelerators run K settings at a small batch each best.", lower_bound=0)
  torch = flags.DEFINE_enum(
      "torch", "compile", TORCH_FIGURES,
      "PyTorch references to time: none, eager, or eager and torch.compile (~40 s to compile).")
  memory = flags.DEFINE_bool("memory", False, "Peak host memory against dataset size instead.")
  memory_data_dir = flags.DEFINE_string("memory_data_dir", "data/memory",
                                        "Where --memory prepares (and reuses) its datasets.")

  def work(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    if memory.value:
      print(json.dumps(memory_benchmark.measure(memory_data_dir.value)))
      return
    print(json.dumps(benchmark(config.value, repeats=repeats.value, vmap_k=vmap_k.value,
                               vmap_batch=vmap_batch.value, torch=torch.value)))

  run_app(work)


if __name__ == "__main__":
  main()
