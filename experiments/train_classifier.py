r"""Trains the classifier that data fine-tuning later freezes.

  python -m experiments.train_classifier --config=configs/digits.py:mnist5k \
      --workdir=runs/mnist5k

Writes into the workdir: config.json, checkpoints/ (read by experiments.dft through
--config.classifier_dir), metrics.jsonl and metrics.json (validation and test
accuracy). Starting the same command again resumes from the last checkpoint.
"""
from typing import Any

import jax
import ml_collections

from dfm import checkpoint, data, loop, models, runs
from dfm.classifier import init_train_state, make_train_step
from dfm.evaluate import make_eval_step
from dfm.optim import make_optimizer
from dfm.xla import compiler_options
from dfm.workdir import claim_workdir, write_json
from experiments.cli import launch


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config.model`` on ``config.train.dataset``; returns val/test accuracy."""
  runs.check_schedule(config, "train")
  train = config.train
  sources = runs.open_splits(train.dataset, config.data_dir, config.model.input_shape)
  workdir = claim_workdir(workdir, config)
  module = models.build_classifier(config.model)
  apply_fn = models.make_apply_fn(module)
  optimizer = make_optimizer(train.optimizer, train.lr)
  state = init_train_state(
      models.init_params(module, tuple(config.model.input_shape), config.seed), optimizer)
  batches_per_epoch = data.num_batches(len(sources["train"]), train.batch_size)
  step = jax.jit(make_train_step(apply_fn, optimizer), donate_argnums=0,
                 compiler_options=compiler_options())
  state = loop.run_loop(
      state,
      data.make_train_loader(sources["train"], batch_size=train.batch_size,
                             seed=config.seed, num_epochs=train.epochs),
      step,
      mngr=checkpoint.manager(workdir / "checkpoints"),
      total_batches=batches_per_epoch * train.epochs,
      checkpoint_every=config.checkpoint_every,
      log_every=config.log_every,
      log_file=workdir / "metrics.jsonl")
  eval_step = make_eval_step(apply_fn)
  results = {"dataset": train.dataset, "num_params": models.count_params(state["params"])}
  for split in ("validation", "test"):
    results[split] = runs.evaluate_split(eval_step, state["params"], None, sources[split], config)
  write_json(workdir / "metrics.json", results)
  print(f"Classifier on {train.dataset}: val accuracy {100 * results['validation']['accuracy']:.1f}%, "
        f"test {100 * results['test']['accuracy']:.1f}%. Checkpoint: {workdir / 'checkpoints'}")
  return results


if __name__ == "__main__":
  launch(run)
