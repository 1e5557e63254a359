r"""Data fine-tuning: learn one noise that makes a frozen classifier fit a dataset.

  python -m experiments.dft --config=configs/digits.py:mnist5k_to_uci \
      --workdir=runs/mnist5k_to_uci --config.classifier_dir=runs/mnist5k \
      --config.dft.lam=0.1

Writes into the workdir: config.json, checkpoints/, metrics.jsonl (training log),
noise.npy, noise.png and metrics.json (before/after on validation and test).
Starting the same command again resumes from the last checkpoint.
"""
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from dfm import checkpoint, data, loop, runs
from dfm.dft import init_state, make_update_step
from dfm.evaluate import make_eval_step
from dfm.figures import save_noise_png
from dfm.optim import make_optimizer
from dfm.parallel import select_step
from dfm.transform import resize_noise
from dfm.workdir import claim_workdir, write_json
from experiments.cli import launch


def _noise_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """``config.dft.noise_shape`` (``()``: the image's shape), checked against the images."""
  shape = tuple(config.dft.noise_shape) or tuple(config.model.input_shape)
  resize_noise(np.zeros(shape, np.float32), tuple(config.model.input_shape))
  return shape


def _make_update(config, apply_fn, params, optimizer):
  """One batch's work: ``updates_per_batch`` noise updates on the same batch."""
  dft = config.dft
  step = select_step(dft.parallel, lambda axis_name: make_update_step(
      apply_fn, optimizer, lam=dft.lam, kind=dft.transform, class_term=dft.class_term,
      axis_name=axis_name))

  def update(state, batch):
    for _ in range(dft.updates_per_batch):
      state, metrics = step(state, params, batch)
    return state, metrics

  return update


def _before_after(eval_step, params, noise, source, config) -> dict[str, Any]:
  return {"before": runs.evaluate_split(eval_step, params, None, source, config),
          "after": runs.evaluate_split(eval_step, params, noise, source, config)}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the noise, evaluates before/after, writes the outputs; returns metrics.

  Everything is checked (config, classifier, data) before the workdir is claimed.
  """
  runs.check_schedule(config, "dft")
  apply_fn, params = runs.load_frozen_classifier(config)
  sources = runs.open_splits(config.dft.dataset, config.data_dir, config.model.input_shape)
  batches_per_epoch = data.num_batches(len(sources["train"]), config.dft.batch_size)
  total_batches = batches_per_epoch * config.dft.epochs
  optimizer = make_optimizer(config.dft.optimizer, config.dft.lr, schedule=config.dft.lr_schedule,
                             total_steps=total_batches * config.dft.updates_per_batch)
  state = init_state(_noise_shape(config), optimizer)
  workdir = claim_workdir(workdir, config)
  batches = data.make_train_loader(
      sources["train"], batch_size=config.dft.batch_size, seed=config.seed,
      num_epochs=config.dft.epochs)
  eval_step = make_eval_step(apply_fn, kind=config.dft.transform)

  def validation(state, done):
    del done
    report = runs.evaluate_split(eval_step, params, state["noise"], sources["validation"], config)
    return {"val_accuracy": report["accuracy"]}

  state = loop.run_loop(
      state, batches, _make_update(config, apply_fn, params, optimizer),
      mngr=checkpoint.manager(workdir / "checkpoints"),
      total_batches=total_batches,
      checkpoint_every=config.checkpoint_every // config.dft.updates_per_batch,
      log_every=config.log_every // config.dft.updates_per_batch,
      log_file=workdir / "metrics.jsonl", on_batches_done=validation)
  return _write_results(workdir, config, eval_step, params, state, sources)


def _write_results(workdir: Path, config, eval_step, params, state, sources) -> dict[str, Any]:
  noise = np.asarray(jax.device_get(state["noise"]))
  np.save(workdir / "noise.npy", noise)
  save_noise_png(noise, workdir / "noise.png")
  test = _before_after(eval_step, params, noise, sources["test"], config)
  results = {
      "dataset": config.dft.dataset, "split": "test", **test,
      "val": _before_after(eval_step, params, noise, sources["validation"], config),
      "steps": int(state["step"]),
  }
  write_json(workdir / "metrics.json", results)
  before, after = test["before"]["accuracy"], test["after"]["accuracy"]
  print(f"DFT on {config.dft.dataset} test: accuracy {100 * before:.1f}% -> "
        f"{100 * after:.1f}% ({100 * (after - before):+.1f} points) at PSNR "
        f"{test['after']['psnr_db']:.1f} dB; val {100 * results['val']['before']['accuracy']:.1f}%"
        f" -> {100 * results['val']['after']['accuracy']:.1f}%. Outputs: {workdir}")
  return results


if __name__ == "__main__":
  launch(run)
