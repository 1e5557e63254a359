"""Keyword-only pure loss terms of Data Fine-tuning, composable in any JAX project.

Every term returns a scalar: a (weighted) mean over the batch. ``weights`` (one per
example, e.g. a 0/1 mask that hides padding rows) default to all ones.
"""
import jax
import jax.numpy as jnp
import optax

CLASS_TERMS: tuple[str, ...] = ("hinge", "xent")


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Returns ``sum_k w_k v_k / max(sum_k w_k, 1)``; the plain mean without weights.

  Example::

    weighted_mean(jnp.array([1., 3.]), jnp.array([1., 0.]))  # 1.0
  """
  if weights is None:
    return jnp.mean(values)
  weights = weights.astype(values.dtype)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


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
  true_prob = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
  return weighted_mean(jnp.maximum(0.0, 1.0 - true_prob), weights)


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
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
  return weighted_mean(losses, weights)


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
    class_term: str = "hinge",
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The DFT objective (Eq. 11-12): ``class_term + lam * appearance_distance``.

  ``class_term`` is the paper's true-class hinge on probabilities (``"hinge"``) or
  softmax cross-entropy (``"xent"``). ``logits`` are the frozen classifier's output
  on ``perturbed``.

  Example::

    x = jnp.full((2, 4, 4, 1), 0.5); z = x + 0.1
    loss, terms = dft_objective(logits=jnp.array([[2., 0.], [0., 2.]]),
                                labels=jnp.array([0, 1]), images=x, perturbed=z,
                                lam=0.01)  # hinge 0.119 + 0.01 * 0.16

  Returns:
    ``(loss, terms)`` with ``terms = {"class_term", "appearance"}``.
  """
  if class_term == "hinge":
    classification = true_class_hinge(
        probs=jax.nn.softmax(logits), labels=labels, weights=weights)
  elif class_term == "xent":
    classification = softmax_xent(logits=logits, labels=labels, weights=weights)
  else:
    raise ValueError(f"Unknown class_term {class_term!r}; choose one of {CLASS_TERMS}.")
  appearance = appearance_distance(images=images, perturbed=perturbed, weights=weights)
  loss = classification + lam * appearance
  return loss, {"class_term": classification, "appearance": appearance}


def class_term_per_image(*, true_prob: jax.Array, class_term: str = "hinge") -> jax.Array:
  """The class term of each image from its true-class probability alone (query-only DFT).

  ``hinge``: ``1 - p_y`` (Eq. 12); ``xent``: ``-log p_y``. A black box that only
  returns scores gives exactly these, with no logits.

  Example::

    class_term_per_image(true_prob=jnp.array([0.9, 0.25]), class_term="xent")  # [0.105, 1.386]
  """
  if class_term == "hinge":
    return jnp.maximum(0.0, 1.0 - true_prob)
  if class_term == "xent":
    return -jnp.log(jnp.maximum(true_prob, 1e-12))
  raise ValueError(f"Unknown class_term {class_term!r}; choose one of {CLASS_TERMS}.")
