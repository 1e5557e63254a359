r"""Before / DFT / MFT / DFT+MFT on the same splits over seeds: the paper's comparison.

  python -m experiments.compare --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/paper/mnist5k-uci_digits --seeds=3

For each seed ``s`` (``config.seed``, ``config.seed + 1``, ...) it trains the classifier
on the source (``classifier/seed<s>``), then runs each method on the target
(``dft/seed<s>``, ``mft/seed<s>``, ``dft_mft/seed<s>``), each a full run with its
own report.md. Hyperparameters are the config's (choose them on validation with
experiments.sweep and experiments.collect); test accuracy is only reported.
Writes compare.md, compare.csv and compare.json; finished runs are skipped and
interrupted ones resume, so the same command continues where it stopped.
"""
from absl import flags

from dfm.studies import compare
from experiments.cli import launch

if __name__ == "__main__":
  SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds, from config.seed up.")
  METHOD_NAMES = flags.DEFINE_list("methods", list(compare.METHODS),
                                   f"Methods to run, of {list(compare.METHODS)}.")
  launch(lambda config, workdir: compare.run(config, workdir, seeds=SEEDS.value,
                                             methods=METHOD_NAMES.value))
