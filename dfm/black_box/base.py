"""The second boundary beside ``apply_fn``: a model that can only be scored.

A black box is ``score_fn(images) -> probabilities``: a host batch ``[N, H, W, C]``
in [0, 1] goes in, ``[N, num_classes]`` class probabilities come out. Nothing
differentiates through it; it is only called. Every adapter (a JAX ``apply_fn``,
an ONNX file, an HTTP service) subclasses :class:`BlackBox`, which checks each
reply. The model keeps no count: :meth:`BlackBox.score` returns what one call
spent beside the scores, a :class:`Spent`:

- ``calls``: requests answered (one per ``score`` call, or one per HTTP batch);
- ``images``: images scored in answered calls;
- ``failures``: requests that failed and were retried or given up on.

An exception raised by ``score`` carries what the call spent before it failed
as ``error.spent`` (see :func:`spent_of`), so the caller's ledger loses nothing.

A model that reveals only its top-k classes answers NaN for the others: unknown,
not zero (see :func:`known_true_class_probability`).

Example::

  model = JaxBlackBox(apply_fn, params, num_classes=10)
  reply = model.score(images)
  reply.probabilities                    # np.ndarray [N, num_classes]
  reply.spent                            # Spent(calls=1, images=N, failures=0)
  model(images)                          # the probabilities alone
"""
import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

COUNTS = ("calls", "images", "failures")
# Rows of a probability reply must sum to 1 within this (float32 rounding).
SUM_TOLERANCE = 1e-3


class Spent(NamedTuple):
  """What scoring cost: answered ``calls``, ``images`` they scored, failed attempts.

  Example::

    Spent(1, 8) + Spent(failures=2)  # Spent(calls=1, images=8, failures=2)
  """

  calls: int = 0
  images: int = 0
  failures: int = 0

  def __add__(self, other: "Spent") -> "Spent":  # type: ignore[override]
    return Spent(*(a + b for a, b in zip(self, other)))


class Reply(NamedTuple):
  """A scored batch: ``probabilities [N, num_classes]`` and what the call ``spent``."""

  probabilities: np.ndarray
  spent: Spent


def spent_of(error: BaseException) -> Spent:
  """What was spent before ``error`` was raised (nothing if it does not say)."""
  return getattr(error, "spent", Spent())


def with_spent(error: BaseException, spent: Spent) -> BaseException:
  """``error`` marked with ``spent`` (what its call cost before it), to re-raise."""
  error.spent = spent  # type: ignore[attr-defined]
  return error


def ledger_arrays(counts: Any) -> dict[str, np.ndarray]:
  """A ledger (a dict of :data:`COUNTS`, or a :class:`Spent`) as 0-d int64 arrays,
  the form a checkpointed state holds."""
  counts = counts._asdict() if isinstance(counts, Spent) else counts
  return {name: np.asarray(counts[name], np.int64) for name in COUNTS}


def ledger_ints(counts: Any) -> dict[str, int]:
  """A ledger as plain ints, the form JSON holds."""
  return {name: int(counts[name]) for name in COUNTS}


def add_spent(ledger: Any, spent: Spent) -> dict[str, np.ndarray]:
  """``ledger + spent``, as the 0-d int64 arrays a state holds.

  Example::

    add_spent(ledger_arrays(Spent()), Spent(1, 8))["images"]  # array(8)
  """
  return {name: np.asarray(int(ledger[name]) + getattr(spent, name), np.int64)
          for name in COUNTS}


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
  if np.any((values[known] < 0) | (values[known] > 1 + SUM_TOLERANCE)):
    raise ValueError(f"{source} answered values outside [0, 1]: they are not probabilities "
                     "(declare the output as logits if the model returns logits).")
  sums = np.where(known, values, 0.0).sum(axis=1)
  bad_sums = sums > 1 + SUM_TOLERANCE if partial else np.abs(sums - 1) > SUM_TOLERANCE
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
  """A model scored by queries only: ``model.score(images) -> Reply``.

  Subclasses implement ``_score(images) -> Reply`` (an exception it raises carries
  ``spent``, see :func:`with_spent`) and set ``num_classes``; ``partial`` marks
  top-k replies (NaN for unknown classes).
  """

  num_classes: int
  partial: bool = False

  @abc.abstractmethod
  def _score(self, images: np.ndarray) -> Reply:
    """The model's probabilities for ``images`` and what the call spent."""

  def calls_for(self, num_images: int) -> int:
    """Calls that scoring ``num_images`` images at once takes (one, unless batched)."""
    del num_images
    return 1

  def score(self, images: Any) -> Reply:
    """The checked probabilities of ``images`` ([N, H, W, C] in [0, 1]) and the cost.

    Raises:
      ValueError: bad images, or a reply that is not probabilities (its ``spent``
        counts the answered call).
    """
    images = check_images(images)
    reply = self._score(images)
    try:
      probabilities = check_probabilities(reply.probabilities, len(images), self.num_classes,
                                          source=type(self).__name__, partial=self.partial)
    except ValueError as error:
      raise with_spent(error, reply.spent) from None
    return Reply(probabilities, reply.spent)

  def __call__(self, images: Any) -> np.ndarray:
    """The probabilities alone, for uses that keep no ledger."""
    return self.score(images).probabilities


class JaxBlackBox(BlackBox):
  """A JAX ``apply_fn(params, x) -> logits`` seen only through its softmax scores.

  The images reach it as host arrays and the scores leave as host arrays, so a
  ``jax.grad`` around a query-only step cannot trace through the model. The
  params are placed on the device once.
  """

  def __init__(self, apply_fn: Callable, params: Any, *, num_classes: int) -> None:
    self.num_classes = num_classes
    self._params = jax.device_put(params)
    self._probabilities = jax.jit(lambda params, x: jax.nn.softmax(apply_fn(params, x), -1))

  def _score(self, images: np.ndarray) -> Reply:
    probabilities = np.asarray(self._probabilities(self._params, jax.device_put(images)))
    return Reply(probabilities, Spent(calls=1, images=len(images)))


class TopKBlackBox(BlackBox):
  """Only the ``k`` most probable classes of ``inner`` are revealed; the rest read NaN.

  This is what an API that returns "top-k labels with scores" gives. What it
  spends is what the inner model spends.
  """

  partial = True

  def __init__(self, inner: BlackBox, k: int) -> None:
    if not 1 <= k <= inner.num_classes:
      raise ValueError(f"top-k needs 1 <= k <= {inner.num_classes} classes, got k={k}.")
    self.inner, self.k, self.num_classes = inner, k, inner.num_classes

  def calls_for(self, num_images: int) -> int:
    return self.inner.calls_for(num_images)

  def _score(self, images: np.ndarray) -> Reply:
    reply = self.inner.score(images)
    probabilities = np.array(reply.probabilities)
    hidden = np.argsort(-probabilities, axis=1)[:, self.k:]
    np.put_along_axis(probabilities, hidden, np.nan, axis=1)
    return Reply(probabilities, reply.spent)


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
