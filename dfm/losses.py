"""Keyword-only pure loss terms of Data Fine-tuning, composable in any JAX project.

Every term returns a scalar: a (weighted) mean over the batch. ``weights`` (one per
example, e.g. a 0/1 mask that hides padding rows) default to all ones.

The classification term of DFT is a name of :data:`CLASS_TERMS` or any per-image
function ``class_term(*, logits, labels) -> [B]``; :func:`get_class_term` resolves
a name once, outside traced code.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

ClassTerm = Callable[..., jax.Array]
# The smallest probability whose log a query-only class term takes (log 0 is -inf).
_MIN_PROB = 1e-12


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Returns ``sum_k w_k v_k / sum_k w_k`` (0 when every weight is 0); the plain mean
  without weights. Exact for any non-negative weights, fractional ones included.

  Example::

    weighted_mean(jnp.array([1., 3.]), jnp.array([1., 0.]))      # 1.0
    weighted_mean(jnp.array([1., 3.]), jnp.array([0.25, 0.25]))  # 2.0
  """
  if weights is None:
    return jnp.mean(values)
  weights = weights.astype(values.dtype)
  total = jnp.sum(weights)
  safe_total = jnp.where(total > 0, total, 1.0)
  return jnp.where(total > 0, jnp.sum(values * weights) / safe_total, 0.0)


def _true_class(values: jax.Array, labels: jax.Array) -> jax.Array:
  """``values[k, y_k]`` of every row ``k``."""
  return jnp.take_along_axis(values, labels[:, None].astype(jnp.int32), axis=1)[:, 0]


def hinge_per_image(*, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``max(0, 1 - y_k^T softmax(logits_k))`` = ``1 - p_true`` of every image (Eq. 12).

  Example::

    hinge_per_image(logits=jnp.log(jnp.array([[0.9, 0.1]])), labels=jnp.array([0]))  # [0.1]
  """
  return jnp.maximum(0.0, 1.0 - _true_class(jax.nn.softmax(logits), labels))


def xent_per_image(*, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``-log softmax(logits_k)[y_k]`` of every image.

  Example::

    xent_per_image(logits=jnp.zeros((1, 4)), labels=jnp.array([2]))  # [log 4]
  """
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))


# Each built-in term also gives its value from the true-class probability alone,
# exactly (query-only DFT has no logits): ``term.of_true_prob(p) -> [B]``.
hinge_per_image.of_true_prob = lambda p: jnp.maximum(0.0, 1.0 - p)
xent_per_image.of_true_prob = lambda p: -jnp.log(jnp.maximum(p, _MIN_PROB))
CLASS_TERMS: dict[str, ClassTerm] = {"hinge": hinge_per_image, "xent": xent_per_image}


def get_class_term(class_term: str | ClassTerm) -> ClassTerm:
  """The per-image class term for a name of :data:`CLASS_TERMS`, or ``class_term`` itself.

  Example::

    get_class_term("hinge") is hinge_per_image  # True
    get_class_term(lambda *, logits, labels: -logits[:, 0])  # a term of your own

  Raises:
    ValueError: an unknown name.
  """
  if callable(class_term):
    return class_term
  if class_term not in CLASS_TERMS:
    raise ValueError(f"Unknown class_term {class_term!r}; choose one of {tuple(CLASS_TERMS)}.")
  return CLASS_TERMS[class_term]


def true_class_hinge(
    *, probs: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """The paper's classification term (Eq. 12): ``mean_k max(0, 1 - y_k^T P(A|Z_k))``.

  ``y_k`` is the one-hot label, so the term is ``1 - p_true`` per image.

  Example::

    probs = jnp.array([[0.9, 0.1], [0.3, 0.7]])
    true_class_hinge(probs=probs, labels=jnp.array([0, 0]))  # (0.1 + 0.7) / 2 = 0.4

  Args:
    probs: ``[B, K]`` class probabilities.
    labels: ``[B]`` integer classes.
    weights: optional ``[B]`` per-example weights.
  """
  return weighted_mean(jnp.maximum(0.0, 1.0 - _true_class(probs, labels)), weights)


def squared_distance_per_image(*, images: jax.Array, perturbed: jax.Array) -> jax.Array:
  """``||X_k - Z_k||_F^2`` for every image ``k`` of the batch: shape ``[B]``.

  Example::

    squared_distance_per_image(images=jnp.zeros((1, 2, 2, 1)),
                               perturbed=jnp.full((1, 2, 2, 1), 0.5))  # [1.0]
  """
  return jnp.square(images - perturbed).reshape(images.shape[0], -1).sum(axis=1)


def appearance_distance(
    *, images: jax.Array, perturbed: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """The paper's appearance term (Eq. 11): ``mean_k ||X_k - Z_k||_F^2``.

  A per-image SUM of squared pixel differences, so it grows with the image size
  (784 pixels at 28x28, 150,528 at 224x224x3): the weight ``lam`` that balances it
  against the classification term depends on the resolution.

  Example::

    x = jnp.zeros((2, 2, 2, 1)); z = x.at[0].set(0.5)
    appearance_distance(images=x, perturbed=z)  # (4 * 0.25 + 0) / 2 = 0.5

  Args:
    images: ``[B, H, W, C]`` originals ``X``.
    perturbed: ``[B, H, W, C]`` perturbed images ``Z``.
    weights: optional ``[B]`` per-example weights.
  """
  squared = squared_distance_per_image(images=images, perturbed=perturbed)
  return weighted_mean(squared, weights)


def softmax_xent(
    *, logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """Softmax cross-entropy ``mean_k -log softmax(logits_k)[y_k]``.

  Example::

    softmax_xent(logits=jnp.zeros((1, 4)), labels=jnp.array([2]))  # log(4)
  """
  return weighted_mean(xent_per_image(logits=logits, labels=labels), weights)


def accuracy(
    *, logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
) -> jax.Array:
  """Fraction of examples whose highest logit is the true class (weighted).

  Example::

    accuracy(logits=jnp.array([[2., 1.], [0., 3.]]), labels=jnp.array([0, 0]))  # 0.5
  """
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return weighted_mean(correct, weights)


def dft_objective(
    *,
    logits: jax.Array,
    labels: jax.Array,
    images: jax.Array,
    perturbed: jax.Array,
    lam: float,
    class_term: str | ClassTerm = "hinge",
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DFT objective (Eq. 11-12): ``mean_k class_term_k + lam * appearance_distance``.

  ``class_term`` is a name of :data:`CLASS_TERMS` (the paper's true-class hinge
  ``"hinge"``, or softmax cross-entropy ``"xent"``) or a per-image function
  ``(*, logits, labels) -> [B]``. ``logits`` are the frozen classifier's output on
  ``perturbed``.

  Example::

    x = jnp.full((2, 4, 4, 1), 0.5); z = x + 0.1
    loss, terms = dft_objective(logits=jnp.array([[2., 0.], [0., 2.]]),
                                labels=jnp.array([0, 1]), images=x, perturbed=z,
                                lam=0.01)  # hinge 0.119 + 0.01 * 0.16

  Returns:
    ``(loss, terms)`` with ``terms = {"class_term", "appearance"}``.
  """
  per_image = get_class_term(class_term)(logits=logits, labels=labels)
  classification = weighted_mean(per_image, weights)
  appearance = appearance_distance(images=images, perturbed=perturbed, weights=weights)
  loss = classification + lam * appearance
  return loss, {"class_term": classification, "appearance": appearance}


def class_term_per_image(*, true_prob: jax.Array,
                         class_term: str | ClassTerm = "hinge") -> jax.Array:
  """The class term of each image from its true-class probability alone (query-only DFT).

  A black box that only returns scores gives ``p_y`` and no logits. ``hinge`` gives
  ``1 - p_y`` (Eq. 12) and ``xent`` ``-log p_y`` exactly (their ``of_true_prob``);
  a term of one's own without ``of_true_prob`` is evaluated on the two classes
  "true" and "the rest", logits ``[log p_y, log(1 - p_y)]`` with label 0. ``p_y``
  is taken as at least 1e-12.

  Example::

    class_term_per_image(true_prob=jnp.array([0.9, 0.25]), class_term="xent")  # [0.105, 1.386]
  """
  term = get_class_term(class_term)
  if hasattr(term, "of_true_prob"):
    return term.of_true_prob(true_prob)
  true_prob = jnp.clip(true_prob, _MIN_PROB, 1.0)
  logits = jnp.stack([jnp.log(true_prob), jnp.log1p(-true_prob)], axis=-1)
  return term(logits=logits, labels=jnp.zeros(true_prob.shape, jnp.int32))
