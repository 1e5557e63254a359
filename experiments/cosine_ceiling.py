r"""What a query-only estimator must reach: white-box DFT with gradients of a given cosine.

  make demo   # the frozen mnist5k VGG and its white-box DFT on uci_digits
  python -m experiments.cosine_ceiling --workdir=runs/cosine_ceiling \
      --cosines=1,0.5,0.3,0.2,0.1 --steps=100,350

Each run is white-box DFT of `--config`'s classifier (a query-only config of a JAX
model) whose class gradient is replaced, at every step, by one with the cosine c
to it (`dfm.estimators.at_cosine`: the gradient plus orthogonal Gaussian noise), as
many steps as a query run takes, with its batches, optimizer, lam and exact
appearance gradient. No query is sent. The lr is chosen per (steps, cosine) on mean
validation accuracy over the seeds; test is reported as a share of the white-box
run's test gain (`--white_box`). Writes ceiling.md, .csv and .json into --workdir.
A query run's own cosine: `python -m experiments.query_dft ... --config.query.cosine=True`
logs `cosine` in its metrics.jsonl.
"""
from absl import flags
from ml_collections import config_flags

from dfm.studies import cosine_ceiling
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

_CONFIG = config_flags.DEFINE_config_file("config", "configs/query.py:digits",
                                          "A query-only config of a JAX classifier.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/cosine_ceiling", "Where the table goes.")
_WHITE_BOX = flags.DEFINE_string("white_box", "runs/demo/dft",
                                 "A finished white-box DFT run of the same classifier.")
_COSINES = flags.DEFINE_list("cosines", ["1", "0.5", "0.3", "0.2", "0.1"],
                             "Cosines of the degraded gradients with the true ones.")
_STEPS = flags.DEFINE_list("steps", ["100", "350"], "Noise updates of each run.")
_LRS = flags.DEFINE_list("lrs", ["0.03", "0.1", "0.3"], "Learning rates to choose from.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (batches and noise draws).")


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  print(exit_on_bad_input(lambda: cosine_ceiling.run(
      _CONFIG.value, _WORKDIR.value, cosines=[float(c) for c in _COSINES.value],
      steps=[int(s) for s in _STEPS.value], lrs=[float(lr) for lr in _LRS.value],
      seeds=[int(s) for s in _SEEDS.value], white_box=_WHITE_BOX.value)))


if __name__ == "__main__":
  run_app(main)
