"""experiments.benchmark on the tiny config: every figure of its JSON, measured for real."""
import json

from absl import flags

from configs import digits
from experiments import benchmark

FIGURES = {"step_ms", "floor_ms", "ratio", "step_gflop", "step_gflops", "matmul_gflops",
           "pipeline_examples_per_s", "step_examples_per_s", "vmap_speedup"}


def test_benchmark_measures_every_figure_and_compiles_the_step_once(data_dir):
  config = digits.get_config("mnist5k_to_uci,runlocal")
  config.data_dir = data_dir
  result = benchmark.benchmark(config, repeats=1, vmap_k=2, vmap_batch=16,
                               torch="none", matmul_size=256)
  json.dumps(result)
  assert {name for name, value in result.items() if isinstance(value, float | int)
          and value > 0} >= FIGURES
  assert result["compiles"] == 1
  assert (result["vmap_k"], result["vmap_batch"]) == (2, 16)
  assert not any(name.startswith("torch") for name in result)
  # XLA counts a conv's multiply-adds: the tiny VGG's forward alone is ~0.2 MFLOP an image.
  assert result["step_gflop"] > 0.2e-3 * config.dft.batch_size


def test_importing_the_benchmark_defines_no_flags():
  """Its flags are defined when it runs, as every entrypoint's: a test process that imports
  it can still define --config for another entrypoint."""
  assert benchmark.main and not {"repeats", "vmap_k", "memory_data_dir"} & set(flags.FLAGS)
