"""What the entrypoints share: checking the config, opening the data and the frozen classifier."""
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from dfm import checkpoint, classifier, data, losses, models, optim, parallel, transform
from dfm.evaluate import EvalStep, evaluate

SPLITS = ("train", "validation", "test")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"config.{name}={value!r} is not one of {choices}.")


def _check_rounds(config: ml_collections.ConfigDict) -> None:
  """DFT+MFT: rounds and each phase's epochs positive; DFT and MFT share the dataset."""
  for field in ("rounds", "dft_epochs", "mft_epochs"):
    if config.dft_mft[field] < 1:
      raise ValueError(f"config.dft_mft.{field} must be a positive integer, "
                       f"got {config.dft_mft[field]}.")
  if config.dft.dataset != config.mft.dataset:
    raise ValueError(f"config.dft.dataset={config.dft.dataset!r} and config.mft.dataset="
                     f"{config.mft.dataset!r} differ; DFT+MFT fine-tunes both on one dataset.")


def check_schedule(config: ml_collections.ConfigDict, section: str) -> None:
  """Checks ``config.<section>`` (``train``, ``mft``, ``dft`` or ``dft_mft``) before
  anything is written.

  Sizes and counts must be positive, choices known, and the checkpoint and log
  cadences (in steps) whole batches: a DFT batch serves ``updates_per_batch``
  steps, and checkpoints are taken between batches. ``dft_mft`` checks its rounds
  and the ``dft`` and ``mft`` sections it runs.

  Raises:
    ValueError: naming the field and what it must be.
  """
  if section == "dft_mft":
    check_schedule(config, "dft")
    check_schedule(config, "mft")
    _check_rounds(config)
    return
  schedule = config[section]
  for field in ("batch_size", "epochs", *(("updates_per_batch",) if section == "dft" else ())):
    if schedule[field] < 1:
      raise ValueError(f"config.{section}.{field} must be a positive integer, got {schedule[field]}.")
  if not schedule.lr > 0:
    raise ValueError(f"config.{section}.lr must be positive, got {schedule.lr}.")
  _check_choice(f"{section}.optimizer", schedule.optimizer, optim.OPTIMIZERS)
  steps_per_batch = schedule.get("updates_per_batch", 1)
  for field in ("checkpoint_every", "log_every"):
    if config[field] < 1 or config[field] % steps_per_batch:
      raise ValueError(
          f"config.{field}={config[field]} must be a positive multiple of "
          f"config.{section}.updates_per_batch={steps_per_batch} (whole batches).")
  if section == "mft":
    _check_choice("mft.layers", schedule.layers, classifier.MFT_LAYERS)
  if section == "dft":
    _check_choice("dft.transform", schedule.transform, transform.TRANSFORM_KINDS)
    _check_choice("dft.class_term", schedule.class_term, losses.CLASS_TERMS)
    _check_choice("dft.parallel", schedule.parallel, parallel.PARALLEL_MODES)
    _check_choice("dft.lr_schedule", schedule.lr_schedule, optim.LR_SCHEDULES)


def open_splits(dataset: str, data_dir: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
  """Opens train/validation/test of a prepared dataset and checks the image shape.

  Raises:
    ValueError: the images do not have the shape the classifier takes.
  """
  sources = {split: data.open_split(dataset, split, data_dir) for split in SPLITS}
  found = tuple(np.asarray(sources["train"][0]["image"]).shape)
  if found != tuple(input_shape):
    raise ValueError(
        f"Images of {dataset!r} are {found} but the classifier takes {tuple(input_shape)}: "
        "set config.model.input_shape to the dataset's shape or prepare the dataset "
        "at the classifier's size.")
  return sources


def load_frozen_classifier(config: ml_collections.ConfigDict) -> tuple[models.ApplyFn, Any]:
  """``(apply_fn, params)`` of the classifier saved under ``config.classifier_dir``.

  The checkpoint is checked against ``config.model``: every parameter's shape.
  The classifier must have finished training (its run wrote ``metrics.json``).
  """
  classifier_dir = Path(config.classifier_dir).absolute()
  if not (classifier_dir / "metrics.json").is_file():
    raise ValueError(
        f"{classifier_dir} holds no finished classifier run (no metrics.json). Train one "
        "with `python -m experiments.train_classifier --config=... --workdir=DIR` (the "
        "same command resumes an interrupted one) and pass --config.classifier_dir=DIR.")
  module = models.build_classifier(config.model)
  expected = models.param_shapes(module, tuple(config.model.input_shape))
  params = checkpoint.load_frozen_params(classifier_dir / "checkpoints", expected)
  return models.make_apply_fn(module), params


def evaluate_split(eval_step: EvalStep, params: Any, noise: Any, source: Any,
                   config: ml_collections.ConfigDict) -> dict[str, Any]:
  """:func:`dfm.evaluate.evaluate` over every example of ``source`` (``noise=None``: as is)."""
  batches = data.iterate_eval_batches(source, batch_size=config.eval_batch_size)
  return evaluate(eval_step, params, noise, batches, num_classes=config.model.num_classes)
