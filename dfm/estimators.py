"""Query-only gradient estimates: the gradient of a black-box objective of the noise.

``objective(noises) -> values`` scores a stack of candidate noises ``[M, *shape]``
with one call (e.g. the class term of the DFT loss through a model that can only
be queried); it is only ever called, never differentiated. With ``q`` directions
``d_i`` and a probe scale ``c``, both estimators use antithetic pairs::

  g = (1 / q) sum_i [f(N + c d_i) - f(N - c d_i)] / (2 c) * d_i

SPSA (Spall 1992) draws ``d_i`` with independent +-1 entries; NES (Wierstra et
al. 2014; Ilyas et al. 2018) draws ``d_i ~ N(0, I)``. Both are unbiased for the
gradient of a linear ``f``, and for smooth ``f`` up to ``O(c^2)``.

Example::

  grad = estimate_gradient(objective, noise, jax.random.key(0), kind="nes",
                           num_directions=20, scale=0.01)
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp

ESTIMATORS = ("spsa", "nes")
Objective = Callable[[jax.Array], jax.Array]


def sample_directions(key: jax.Array, kind: str, shape: tuple[int, ...],
                      num_directions: int) -> jax.Array:
  """``[num_directions, *shape]`` probe directions: Rademacher (spsa) or Gaussian (nes)."""
  if kind not in ESTIMATORS:
    raise ValueError(f"Unknown gradient estimator {kind!r}; choose one of {ESTIMATORS}.")
  if num_directions < 1:
    raise ValueError(f"num_directions must be at least 1, got {num_directions}.")
  full_shape = (num_directions, *shape)
  if kind == "spsa":
    return jax.random.rademacher(key, full_shape, dtype=jnp.float32)
  return jax.random.normal(key, full_shape, jnp.float32)


def probe_noises(noise: jax.Array, directions: jax.Array, scale: float) -> jax.Array:
  """``[2q, *shape]``: the ``q`` noises ``N + c d_i``, then the ``q`` noises ``N - c d_i``."""
  step = scale * directions
  return jnp.concatenate([noise + step, noise - step])


def combine(values: jax.Array, directions: jax.Array, scale: float) -> jax.Array:
  """The estimate from the objective's ``2q`` values at :func:`probe_noises`."""
  plus, minus = jnp.split(values, 2)
  weights = (plus - minus) / (2.0 * scale)
  return jnp.tensordot(weights, directions, axes=1) / directions.shape[0]


def estimate_gradient(objective: Objective, noise: jax.Array, key: jax.Array, *, kind: str,
                      num_directions: int, scale: float) -> jax.Array:
  """An estimate of ``grad f(noise)`` from one call of ``objective`` on ``2q`` noises."""
  if not scale > 0:
    raise ValueError(f"The probe scale must be positive, got {scale}.")
  directions = sample_directions(key, kind, noise.shape, num_directions)
  values = jnp.asarray(objective(probe_noises(noise, directions, scale)), jnp.float32)
  if values.shape != (2 * num_directions,):
    raise ValueError(f"The objective returned values of shape {values.shape} for "
                     f"{2 * num_directions} noises; it must return one value per noise.")
  return combine(values, directions, scale)
