r"""Trains the classifier that data fine-tuning later freezes.

  python -m experiments.train_classifier --config=configs/digits.py:mnist5k \
      --workdir=runs/mnist5k

Writes into the workdir: config.json, checkpoints/ (read by experiments.dft through
--config.classifier_dir), metrics.jsonl and metrics.json (validation and test
accuracy). Starting the same command again resumes from the last checkpoint.
"""
from typing import Any

import ml_collections

from dfm import models, runs
from dfm.evaluate import make_eval_step
from dfm.training import fit_weights
from dfm.workdir import claim_workdir, write_json
from experiments.cli import launch


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config.model`` on ``config.train.dataset``; returns val/test accuracy."""
  runs.check_schedule(config, "train")
  sources = runs.open_splits(config.train.dataset, config.data_dir, config.model.input_shape)
  workdir = claim_workdir(workdir, config)
  module = models.build_classifier(config.model)
  apply_fn = models.make_apply_fn(module)
  initial = models.init_params(module, tuple(config.model.input_shape), config.seed)
  params = fit_weights(config, config.train, apply_fn, initial, sources, workdir)
  eval_step = make_eval_step(apply_fn)
  results = {"dataset": config.train.dataset, "num_params": models.count_params(params)}
  for split in ("validation", "test"):
    results[split] = runs.evaluate_split(eval_step, params, None, sources[split], config)
  write_json(workdir / "metrics.json", results)
  print(f"Classifier on {config.train.dataset}: val accuracy "
        f"{100 * results['validation']['accuracy']:.1f}%, test "
        f"{100 * results['test']['accuracy']:.1f}%. Checkpoint: {workdir / 'checkpoints'}")
  return results


if __name__ == "__main__":
  launch(run)
