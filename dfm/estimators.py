"""Query-only gradient estimates: the gradient of a black-box objective of the noise.

The noise is any pytree of arrays; a stack of ``M`` candidate noises is the same
pytree with a leading axis ``M`` on every leaf. ``objective(noises) -> values``
scores such a stack with one call (e.g. the class term of the DFT loss through a model that can only
be queried); it is only ever called, never differentiated. With ``q`` directions
``d_i`` and a probe scale ``c``, both estimators use antithetic pairs::

  g = (1 / q) sum_i [f(N + c d_i) - f(N - c d_i)] / (2 c) * d_i

SPSA (Spall 1992) draws ``d_i`` with independent +-1 entries; NES (Wierstra et
al. 2014; Ilyas et al. 2018) draws ``d_i ~ N(0, I)``. Both are unbiased for the
gradient of a linear ``f``, and for smooth ``f`` up to ``O(c^2)``.

Example::

  grad = estimate_gradient(objective, noise, jax.random.key(0), estimator="nes",
                           num_directions=20, scale=0.01)
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dfm.types import PyTree

ESTIMATORS = ("spsa", "nes")
Objective = Callable[[PyTree], jax.Array]


def _sample_leaf(key: jax.Array, estimator: str, shape: tuple[int, ...]) -> jax.Array:
  if estimator == "spsa":
    return jax.random.rademacher(key, shape, dtype=jnp.float32)
  return jax.random.normal(key, shape, jnp.float32)


def sample_directions(key: jax.Array, estimator: str, like: PyTree, num_directions: int, *,
                      batch: tuple[int, ...] = ()) -> PyTree:
  """Probe directions shaped like ``like`` with leading axes ``[num_directions, *batch]``:
  Rademacher entries (``spsa``) or Gaussian ones (``nes``).

  ``like`` is the noise pytree (or one array shape as a tuple of ints). One array
  uses ``key`` as is; several leaves get ``split(key, n)`` in leaf order.

  Example::

    sample_directions(jax.random.key(0), "nes", jnp.zeros((7, 7, 1)), 4)  # [4, 7, 7, 1]
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"Unknown gradient estimator {estimator!r}; choose one of {ESTIMATORS}.")
  if num_directions < 1:
    raise ValueError(f"num_directions must be at least 1, got {num_directions}.")
  if isinstance(like, tuple) and all(isinstance(d, (int, np.integer)) for d in like):
    like = jax.ShapeDtypeStruct(tuple(map(int, like)), jnp.float32)
  leaves, treedef = jax.tree.flatten(like)
  if not leaves:
    raise ValueError("The noise has no arrays to probe: give one (h, w, C) array or more.")
  keys = [key] if len(leaves) == 1 else list(jax.random.split(key, len(leaves)))
  return jax.tree.unflatten(treedef, [
      _sample_leaf(k, estimator, (num_directions, *batch, *leaf.shape))
      for k, leaf in zip(keys, leaves)])


def probe_noises(noise: PyTree, directions: PyTree, scale: float) -> PyTree:
  """The ``2q`` probe noises: ``N + c d_i`` for every ``i``, then ``N - c d_i``.

  Every leaf gets the leading axis ``2q`` (after which any batch axes of the
  directions follow).
  """
  return jax.tree.map(lambda n, d: jnp.concatenate([n + scale * d, n - scale * d]),
                      noise, directions)


def combine(values: jax.Array, directions: PyTree, scale: float) -> PyTree:
  """The estimate from the objective's ``2q`` values at :func:`probe_noises`.

  ``values`` are ``[2q]``; ``directions`` a pytree of ``[q, *leaf_shape]``.
  """
  plus, minus = jnp.split(values, 2)
  weights = (plus - minus) / (2.0 * scale)
  return jax.tree.map(lambda d: jnp.tensordot(weights, d, axes=1) / d.shape[0], directions)


def estimate_gradient(objective: Objective, noise: PyTree, key: jax.Array, *, estimator: str,
                      num_directions: int, scale: float) -> PyTree:
  """An estimate of ``grad f(noise)`` from one call of ``objective`` on ``2q`` noises.

  Example::

    f = lambda noises: jnp.sum(noises ** 2, axis=(1, 2, 3))
    estimate_gradient(f, jnp.ones((2, 2, 1)), jax.random.key(0), estimator="nes",
                      num_directions=64, scale=1e-3)   # about 2 * noise
  """
  if not scale > 0:
    raise ValueError(f"The probe scale must be positive, got {scale}.")
  directions = sample_directions(key, estimator, noise, num_directions)
  values = jnp.asarray(objective(probe_noises(noise, directions, scale)), jnp.float32)
  if values.shape != (2 * num_directions,):
    raise ValueError(f"The objective returned values of shape {values.shape} for "
                     f"{2 * num_directions} noises; it must return one value per noise.")
  return combine(values, directions, scale)
