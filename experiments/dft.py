r"""Data fine-tuning: learn one noise that makes a frozen classifier fit a dataset.

  python -m experiments.dft --config=configs/digits.py:mnist5k_to_uci \
      --workdir=runs/mnist5k_to_uci --config.classifier_dir=runs/mnist5k \
      --config.dft.lam=0.1

Writes into the workdir: config.json, checkpoints/, metrics.jsonl (training log),
noise.npy, noise.png, metrics.json (before/after on validation and test) and
report.md with its figures. Starting the same command again resumes from the
last checkpoint.
"""
from typing import Any

import ml_collections

from dfm import runs
from dfm.evaluate import make_eval_step
from dfm.results import write_results
from dfm.training import fit_noise, noise_shape
from dfm.workdir import claim_workdir
from experiments.cli import launch


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the noise, evaluates before/after, writes the outputs; returns metrics.

  Everything is checked (config, classifier, data) before the workdir is claimed.
  """
  runs.check_schedule(config, "dft")
  apply_fn, params = runs.load_frozen_classifier(config)
  sources = runs.open_splits(config.dft.dataset, config.data_dir, config.model.input_shape)
  noise_shape(config)
  workdir = claim_workdir(workdir, config)
  noise = fit_noise(config, config.dft, apply_fn, params, sources, workdir)
  return write_results(workdir, config, method="dft", dataset=config.dft.dataset,
                       eval_step=make_eval_step(apply_fn, kind=config.dft.transform),
                       kind=config.dft.transform, before=(params, None),
                       after=(params, noise), sources=sources)


if __name__ == "__main__":
  launch(run)
