"""Evaluating a classifier on a split, with or without the learned noise."""
import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dfm import losses, metrics
from dfm.dft import ApplyFn, Batch
from dfm.xla import compiler_options
from dfm.transform import perturb

EvalStep = Callable[[Any, Any, Batch], tuple[jax.Array, jax.Array]]


def make_eval_step(apply_fn: ApplyFn, *, kind: str = "tanh") -> EvalStep:
  """Returns jitted ``eval_step(params, noise, batch) -> (probabilities, squared_error)``.

  ``noise=None`` evaluates the images as they are (squared error 0); otherwise
  ``Z = perturb(X, noise, kind=kind)`` and ``squared_error[k] = ||X_k - Z_k||_F^2``.
  The probabilities are ``softmax(apply_fn(params, Z))``, one row per image.
  """

  @functools.partial(jax.jit, compiler_options=compiler_options())
  def eval_step(params: Any, noise: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
    images = batch["image"]
    perturbed = images if noise is None else perturb(images, noise, kind=kind)
    probabilities = jax.nn.softmax(apply_fn(params, perturbed), axis=-1)
    return probabilities, losses.squared_distance_per_image(images=images, perturbed=perturbed)

  return eval_step


@dataclasses.dataclass(frozen=True)
class Scores:
  """Every example of a split, scored: ``labels[n]``, ``probabilities[n, class]``."""

  labels: np.ndarray
  probabilities: np.ndarray
  squared_error_sum: float
  num_values: int

  @property
  def predictions(self) -> np.ndarray:
    """The most probable class of each example."""
    return self.probabilities.argmax(axis=-1)


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


def summarize(scores: Scores, *, num_classes: int, perturbed: bool) -> dict[str, Any]:
  """``{"accuracy", "per_class_accuracy", "num_examples"}`` (+ ``"psnr_db"`` if perturbed)."""
  confusion = metrics.confusion_matrix(scores.labels, scores.predictions, num_classes)
  report = {
      "accuracy": metrics.accuracy(confusion),
      "per_class_accuracy": metrics.per_class_accuracy(confusion),
      "num_examples": int(confusion.sum()),
  }
  if perturbed:
    report["psnr_db"] = metrics.psnr_db(scores.squared_error_sum, scores.num_values)
  return report


def evaluate(
    eval_step: EvalStep, params: Any, noise: Any, batches: Iterable[Batch], *, num_classes: int
) -> dict[str, Any]:
  """Accuracy, per-class accuracy and (with a noise) PSNR over a whole split.

  Example::

    report = evaluate(make_eval_step(apply_fn), params, noise,
                      iterate_eval_batches(source, batch_size=800), num_classes=10)
    report["accuracy"], report["psnr_db"]
  """
  return summarize(score(eval_step, params, noise, batches), num_classes=num_classes,
                   perturbed=noise is not None)
