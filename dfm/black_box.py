"""The second boundary beside ``apply_fn``: a model that can only be scored.

A black box is ``score_fn(images) -> probabilities``: a host batch ``[N, H, W, C]``
in [0, 1] goes in, ``[N, num_classes]`` class probabilities come out. Nothing
differentiates through it; it is only called. Every adapter (a JAX ``apply_fn``,
an ONNX file, an HTTP service) subclasses :class:`BlackBox`, which checks each
reply and counts what was spent in ``counts``:

- ``calls``: requests answered (one per ``score`` call, or one per HTTP batch);
- ``images``: images scored in answered calls;
- ``failures``: requests that failed and were retried or given up on.

A model that reveals only its top-k classes answers NaN for the others: unknown,
not zero (see :func:`known_true_class_probability`).

Example::

  model = JaxBlackBox(apply_fn, params, num_classes=10)
  probabilities = model(images)          # np.ndarray [N, num_classes]
  model.counts                           # {"calls": 1, "images": N, "failures": 0}
"""
import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

COUNTS = ("calls", "images", "failures")
# Rows of a probability reply must sum to 1 within this (float32 rounding).
_SUM_TOLERANCE = 1e-3


def ledger_arrays(counts: dict[str, Any]) -> dict[str, np.ndarray]:
  """The counts as 0-d int64 arrays, the form a checkpointed state holds."""
  return {name: np.asarray(counts[name], np.int64) for name in COUNTS}


def ledger_ints(counts: dict[str, Any]) -> dict[str, int]:
  """The counts as plain ints, the form a model and JSON hold."""
  return {name: int(counts[name]) for name in COUNTS}


def check_probabilities(probabilities: Any, num_images: int, num_classes: int, *,
                        source: str, partial: bool = False) -> np.ndarray:
  """The reply as float32 ``[num_images, num_classes]``, or an error naming the fault.

  ``partial`` (top-k replies) lets NaN stand for an unknown class; any other
  non-finite value, a value outside [0, 1] or rows that do not sum to 1 are refused.

  Raises:
    ValueError: wrong shape, NaN/inf, or not probabilities.
  """
  values = np.asarray(probabilities, np.float32)
  if values.shape != (num_images, num_classes):
    raise ValueError(f"{source} answered scores of shape {values.shape} for {num_images} "
                     f"images; expected ({num_images}, {num_classes}). Check the model's "
                     "output and config.model.num_classes.")
  known = ~np.isnan(values) if partial else np.ones(values.shape, bool)
  if not np.all(np.isfinite(values[known])):
    raise ValueError(f"{source} answered NaN or infinite scores; refusing them.")
  if np.any((values[known] < 0) | (values[known] > 1 + _SUM_TOLERANCE)):
    raise ValueError(f"{source} answered values outside [0, 1]: they are not probabilities "
                     "(declare the output as logits if the model returns logits).")
  sums = np.where(known, values, 0.0).sum(axis=1)
  bad_sums = sums > 1 + _SUM_TOLERANCE if partial else np.abs(sums - 1) > _SUM_TOLERANCE
  if np.any(bad_sums):
    raise ValueError(f"{source} answered rows summing to {sums[bad_sums][:3]}, not 1: they "
                     "are not probabilities (declare the output as logits if they are).")
  return values


def scatter_top_k(classes: Any, scores: Any, num_classes: int, *, source: str) -> np.ndarray:
  """A top-k reply (``classes[n, j]`` with ``scores[n, j]``) as ``[N, num_classes]`` rows
  in which every class not named is NaN: unknown, not zero.

  Example::

    scatter_top_k([[2, 0]], [[0.7, 0.2]], 3, source="api")  # [[0.2, nan, 0.7]]

  Raises:
    ValueError: shapes that differ, or class numbers that are not distinct classes.
  """
  classes, scores = np.asarray(classes), np.asarray(scores, np.float32)
  if classes.shape != scores.shape or classes.ndim != 2:
    raise ValueError(f"{source} answered top-k classes of shape {classes.shape} with scores "
                     f"of shape {scores.shape}; they must be the same [N, k].")
  whole = np.all(classes == np.round(classes))
  if not whole or np.any((classes < 0) | (classes >= num_classes)) or any(
      len(set(row)) != len(row) for row in classes.tolist()):
    raise ValueError(f"{source} answered top-k classes that are not distinct class numbers in "
                     f"[0, {num_classes}): check config.black_box.classes_name and "
                     "config.model.num_classes.")
  rows = np.full((len(scores), num_classes), np.nan, np.float32)
  np.put_along_axis(rows, classes.astype(np.int64), scores, axis=1)
  return rows


def check_images(images: Any) -> np.ndarray:
  """``images`` as float32 ``[N, H, W, C]`` in [0, 1], or a ValueError naming the fault."""
  values = np.asarray(images, np.float32)
  if values.ndim != 4 or len(values) == 0:
    raise ValueError("A black box scores a non-empty batch [N, H, W, C]; got shape "
                     f"{values.shape}.")
  if not np.all((values >= 0) & (values <= 1)):
    raise ValueError("Pixels outside [0, 1] were sent to the black box: scale images to [0, 1].")
  return values


class BlackBox(abc.ABC):
  """A model scored by queries only: ``model(images) -> probabilities``, counted.

  Subclasses implement ``_score(images) -> probabilities`` and set
  ``num_classes``; ``partial`` marks top-k replies (NaN for unknown classes).
  """

  num_classes: int
  partial: bool = False

  def __init__(self) -> None:
    self.counts = dict.fromkeys(COUNTS, 0)

  @abc.abstractmethod
  def _score(self, images: np.ndarray) -> np.ndarray:
    """The model's probabilities for ``images``, counted with :meth:`_count_call`."""

  def calls_for(self, num_images: int) -> int:
    """Calls that scoring ``num_images`` images at once takes (one, unless batched)."""
    del num_images
    return 1

  def _count_call(self, num_images: int) -> None:
    self.counts["calls"] += 1
    self.counts["images"] += num_images

  def __call__(self, images: Any) -> np.ndarray:
    images = check_images(images)
    probabilities = self._score(images)
    return check_probabilities(probabilities, len(images), self.num_classes,
                               source=type(self).__name__, partial=self.partial)


class JaxBlackBox(BlackBox):
  """A JAX ``apply_fn(params, x) -> logits`` seen only through its softmax scores.

  The images reach it as host arrays and the scores leave as host arrays, so a
  ``jax.grad`` around a query-only step cannot trace through the model.
  """

  def __init__(self, apply_fn: Callable, params: Any, *, num_classes: int) -> None:
    super().__init__()
    self.num_classes = num_classes
    self._params = jax.device_get(params)
    self._probabilities = jax.jit(lambda params, x: jax.nn.softmax(apply_fn(params, x), -1))

  def _score(self, images: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(self._probabilities(self._params, images))
    self._count_call(len(images))
    return probabilities


class TopKBlackBox(BlackBox):
  """Only the ``k`` most probable classes of ``inner`` are revealed; the rest read NaN.

  This is what an API that returns "top-k labels with scores" gives. Its counts
  are the inner model's.
  """

  partial = True

  def __init__(self, inner: BlackBox, k: int) -> None:
    if not 1 <= k <= inner.num_classes:
      raise ValueError(f"top-k needs 1 <= k <= {inner.num_classes} classes, got k={k}.")
    self.inner, self.k, self.num_classes = inner, k, inner.num_classes

  @property
  def counts(self) -> dict[str, int]:
    return self.inner.counts

  @counts.setter
  def counts(self, counts: dict[str, int]) -> None:
    self.inner.counts = counts

  def calls_for(self, num_images: int) -> int:
    return self.inner.calls_for(num_images)

  def _score(self, images: np.ndarray) -> np.ndarray:
    probabilities = np.array(self.inner(images))
    hidden = np.argsort(-probabilities, axis=1)[:, self.k:]
    np.put_along_axis(probabilities, hidden, np.nan, axis=1)
    return probabilities


def known_true_class_probability(probabilities: jax.Array, labels: jax.Array) -> jax.Array:
  """``p[n, y_n]``, or where it is unknown (NaN, not in a top-k reply) its upper bound.

  An unrevealed class has at most the smallest revealed probability and at most
  the mass left, ``1 - sum(revealed)``: ``p_y <= min(min_j p_j, 1 - sum_j p_j)``.
  A loss on it therefore never claims the true class is more likely than it can be.

  Example::

    p = jnp.array([[0.7, jnp.nan, jnp.nan]])
    known_true_class_probability(p, jnp.array([1]))  # [0.3]
  """
  known = ~jnp.isnan(probabilities)
  revealed = jnp.where(known, probabilities, 0.0)
  left = 1.0 - revealed.sum(axis=1)
  smallest = jnp.where(known, probabilities, jnp.inf).min(axis=1)
  bound = jnp.clip(jnp.minimum(left, smallest), 0.0, 1.0)
  true = jnp.take_along_axis(probabilities, labels[:, None], axis=1)[:, 0]
  return jnp.where(jnp.isnan(true), bound, true)


def fill_unknown(probabilities: Any) -> np.ndarray:
  """Top-k rows completed for reports: the mass left is shared evenly by the unknown classes.

  Example::

    fill_unknown([[0.7, np.nan, np.nan]])  # [[0.7, 0.15, 0.15]]
  """
  values = np.array(probabilities, np.float32)
  unknown = np.isnan(values)
  left = np.clip(1.0 - np.nansum(values, axis=1, keepdims=True), 0.0, 1.0)
  share = left / np.maximum(unknown.sum(axis=1, keepdims=True), 1)
  return np.where(unknown, share, values)
