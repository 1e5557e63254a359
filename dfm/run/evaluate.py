"""Evaluating a classifier on a split, with or without the learned noise."""
import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np

from dfm import data, models
from dfm.dft import perturb_with_distance
from dfm.models.foreign import describe_model
from dfm.report.scores import Scores, summarize
from dfm.transform import Transform, get_transform
from dfm.types import ApplyFn, Batch
from dfm.xla import compiler_options

EvalStep = Callable[[Any, Any, Batch], tuple[jax.Array, jax.Array]]


def make_eval_step(apply_fn: ApplyFn, *, transform: str | Transform = "tanh") -> EvalStep:
  """Returns ``eval_step(params, noise, batch) -> (probabilities, squared_error)``.

  ``noise=None`` evaluates the images as they are (squared error 0); otherwise
  ``Z = perturb(X, noise)`` and ``squared_error[k] = ||X_k - Z_k||_F^2``. The
  probabilities are ``softmax(apply_fn(params, Z))``, one row per image. The
  batch is put on the device explicitly; ``params`` and ``noise`` are expected
  there already (see :func:`dfm.models.load_frozen_params`).
  """
  transform = get_transform(transform)

  @functools.partial(jax.jit, compiler_options=compiler_options())
  def compiled(params: Any, noise: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
    images = batch["image"]
    if noise is None:
      perturbed, error = images, jax.numpy.zeros(images.shape[0], images.dtype)
    else:
      perturbed, error = perturb_with_distance(images, noise, transform=transform)
    return jax.nn.softmax(apply_fn(params, perturbed), axis=-1), error

  def eval_step(params: Any, noise: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
    return compiled(params, noise, jax.device_put({"image": batch["image"]}))

  return eval_step


def score(eval_step: EvalStep, params: Any, noise: Any, batches: Iterable[Batch]) -> Scores:
  """Class probabilities of every (unpadded) example, in the order of ``batches``."""
  labels, probabilities, squared_error, num_values = [], [], 0.0, 0
  for batch in batches:
    keep = np.asarray(batch["mask"]) > 0
    batch_probabilities, batch_error = jax.device_get(eval_step(params, noise, batch))
    labels.append(np.asarray(batch["label"])[keep])
    probabilities.append(np.asarray(batch_probabilities)[keep])
    squared_error += float(batch_error[keep].sum())
    num_values += int(keep.sum()) * int(np.prod(batch["image"].shape[1:]))
  return Scores(np.concatenate(labels), np.concatenate(probabilities), squared_error, num_values)


def score_split(eval_step: EvalStep, params: Any, noise: Any, source: Any,
                config: ml_collections.ConfigDict) -> Scores:
  """:func:`score` over every example of ``source`` (``noise=None``: as is)."""
  return score(eval_step, params, noise,
               data.iterate_eval_batches(source, batch_size=config.eval_batch_size))


def evaluate_split(eval_step: EvalStep, params: Any, noise: Any, source: Any,
                   config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Accuracy, per-class accuracy and (with a noise) PSNR over every example of
  ``source`` (``noise=None``: the images as they are).

  Example::

    report = evaluate_split(make_eval_step(apply_fn), params, noise, sources["test"], config)
    report["accuracy"], report["psnr_db"]
  """
  return summarize(score_split(eval_step, params, noise, source, config),
                   num_classes=config.model.num_classes, perturbed=noise is not None)


def evaluate_frozen(config: ml_collections.ConfigDict, dataset: str | None = None,
                    splits: tuple[str, ...] = ("validation", "test")) -> dict[str, Any]:
  """The frozen classifier's accuracy on a prepared dataset, before any fine-tuning.

  The first thing to run with a model of your own: an accuracy near chance on data
  the model should know points at the input convention (``config.model.input``)
  or ``config.model.output_kind``, not at DFT. ``dataset`` defaults to
  ``config.dft.dataset``. Writes nothing.

  Example::

    reports = evaluate_frozen(config)
    reports["test"]["accuracy"], reports["test"]["per_class_accuracy"]
  """
  dataset = dataset or config.dft.dataset
  unknown = sorted(set(splits) - set(data.SPLITS))
  if unknown or not splits:
    raise ValueError(f"Unknown splits {unknown or '(none given)'}: choose from {data.SPLITS}.")
  apply_fn, params = models.load_frozen_classifier(config)
  sources = data.open_splits(dataset, config.data_dir, config.model.input_shape)
  eval_step = make_eval_step(apply_fn)
  reports = {split: evaluate_split(eval_step, params, None, sources[split], config)
             for split in splits}
  names = data.class_names_of(sources["test"])
  for split, report in reports.items():
    per_class = ", ".join(f"{name} {100 * accuracy:.1f}%"
                          for name, accuracy in zip(names, report["per_class_accuracy"]))
    print(f"{describe_model(config)} on {dataset} {split}: accuracy "
          f"{100 * report['accuracy']:.1f}% of {report['num_examples']} ({per_class})")
  if max(report["accuracy"] for report in reports.values()) < 0.5 / len(names):
    print(f"Below half of chance: the dataset's class order ({', '.join(names)}; folder "
          "names sort) may not be the model's output order. Rename the class folders so "
          "they sort in that order (e.g. 0_woman, 1_man) and prepare again.")
  return reports
