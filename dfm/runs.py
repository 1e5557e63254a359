"""What the entrypoints share: opening a run's data and the frozen classifier."""
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from dfm import checkpoint, data, models
from dfm.evaluate import EvalStep, evaluate

SPLITS = ("train", "validation", "test")


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
  """
  module = models.build_classifier(config.model)
  expected = models.param_shapes(module, tuple(config.model.input_shape))
  directory = Path(config.classifier_dir) / "checkpoints"
  params = checkpoint.load_frozen_params(directory, expected)
  return models.make_apply_fn(module), params


def evaluate_split(eval_step: EvalStep, params: Any, noise: Any, source: Any,
                   config: ml_collections.ConfigDict) -> dict[str, Any]:
  """:func:`dfm.evaluate.evaluate` over every example of ``source`` (``noise=None``: as is)."""
  batches = data.iterate_eval_batches(source, batch_size=config.eval_batch_size)
  return evaluate(eval_step, params, noise, batches, num_classes=config.model.num_classes)
