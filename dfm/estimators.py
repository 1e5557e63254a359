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

Two priors cut the directions' dimension or steer them:

- a data prior, ``frequencies=K``: each ``(h, w, C)`` leaf's directions are drawn
  in the span of its ``K x K`` lowest 2-D DCT frequencies per channel,
  ``d = D_h^T z D_w`` (``D`` the orthonormal DCT-II rows, ``z`` SPSA or NES
  entries), so ``E[d d^T]`` is the projector on that span and the estimate is
  unbiased for the gradient's low-frequency part with ``K^2 C`` dimensions
  instead of ``h w C`` (SimBA-DCT, Guo et al. 2019);
- a direction prior ``v`` (a surrogate model's gradient, or the last estimate):
  :func:`prior_guided_estimate` measures ``a = v.grad f`` along the unit ``v``
  with one more antithetic pair, estimates the rest ``e_perp`` from directions
  orthogonal to ``v``, and weighs the two with P-RGF's optimal ``lambda`` (Cheng
  et al. 2019) from the estimated cosine ``alpha`` of ``v`` with the gradient:
  ``g = a v + (1 - lambda (1 - q / D)) e_perp``. P-RGF derives ``lambda`` for
  directions biased towards ``v``; here it is borrowed as a trust in ``v``: 0 for
  a useless prior (``g`` is NES with one more direction, unbiased), 1 for a good
  one, where ``e_perp`` keeps the weight ``q / D`` that maximises the expected
  cosine of ``g`` with the gradient (``alpha^2 + (q / D)(1 - alpha^2)``, against
  ``alpha^2`` for the prior alone) at the price of a bias towards ``v``.

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


def dct_rows(size: int, frequencies: int) -> np.ndarray:
  """The first ``frequencies`` rows of the orthonormal DCT-II matrix of ``size`` points,
  ``[K, size]``: row ``k`` is ``s_k cos(pi (n + 1/2) k / size)``.

  Example::

    rows = dct_rows(28, 7)   # rows @ rows.T == identity (7 x 7)
  """
  k = np.arange(min(frequencies, size))[:, None]
  rows = np.cos(np.pi * (np.arange(size)[None, :] + 0.5) * k / size) * np.sqrt(2.0 / size)
  rows[0] /= np.sqrt(2.0)
  return rows.astype(np.float32)


def low_frequency_shape(shape: tuple[int, ...], frequencies: int) -> tuple[int, ...]:
  """The coefficients of an ``(h, w, C)`` leaf in its lowest ``K x K`` frequencies."""
  if len(shape) != 3:
    raise ValueError(f"A low-frequency basis needs (h, w, C) noise arrays, got {shape}.")
  h, w, channels = shape
  return min(frequencies, h), min(frequencies, w), channels


def from_frequencies(coefficients: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Pixels ``[..., h, w, C]`` of low-frequency DCT coefficients ``[..., K_h, K_w, C]``."""
  k_h, k_w = coefficients.shape[-3:-1]
  rows_h, rows_w = dct_rows(shape[0], k_h), dct_rows(shape[1], k_w)
  return jnp.einsum("kh,...klc,lw->...hwc", rows_h, coefficients, rows_w)


def search_dimensions(like: PyTree, frequencies: int = 0) -> int:
  """Dimensions the directions span: every entry, or ``K_h K_w C`` per leaf."""
  shapes = [tuple(leaf.shape) for leaf in jax.tree.leaves(like)]
  if frequencies:
    shapes = [low_frequency_shape(shape, frequencies) for shape in shapes]
  return int(sum(np.prod(shape) for shape in shapes))


def _sample_leaf(key: jax.Array, estimator: str, shape: tuple[int, ...],
                 leading: tuple[int, ...], frequencies: int) -> jax.Array:
  drawn = low_frequency_shape(shape, frequencies) if frequencies else shape
  if estimator == "spsa":
    entries = jax.random.rademacher(key, (*leading, *drawn), dtype=jnp.float32)
  else:
    entries = jax.random.normal(key, (*leading, *drawn), jnp.float32)
  return from_frequencies(entries, shape) if frequencies else entries


def sample_directions(key: jax.Array, estimator: str, like: PyTree, num_directions: int, *,
                      batch: tuple[int, ...] = (), frequencies: int = 0) -> PyTree:
  """Probe directions shaped like ``like`` with leading axes ``[num_directions, *batch]``:
  Rademacher entries (``spsa``) or Gaussian ones (``nes``), in pixels or (``frequencies``
  K > 0) in each leaf's ``K x K`` lowest DCT frequencies.

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
      _sample_leaf(k, estimator, tuple(leaf.shape), (num_directions, *batch), frequencies)
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


def _dot(a: PyTree, b: PyTree) -> jax.Array:
  """``<a, b>`` over matching leaves; ``a``'s leaves may carry a leading axis."""
  return sum(jnp.tensordot(x, y, axes=y.ndim) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))


def cosine(a: PyTree, b: PyTree) -> jax.Array:
  """The cosine between two pytrees of the same structure (0 if either is zero)."""
  return _dot(a, b) / jnp.maximum(jnp.sqrt(_dot(a, a) * _dot(b, b)), 1e-30)


def unit(tree: PyTree) -> PyTree:
  """``tree / ||tree||`` (zero stays zero)."""
  norm = jnp.sqrt(_dot(tree, tree))
  return jax.tree.map(lambda x: x / jnp.maximum(norm, 1e-30), tree)


def orthogonal_to(directions: PyTree, prior_unit: PyTree) -> PyTree:
  """Each direction ``d_i`` (leading axis) minus its part along the unit ``prior_unit``."""
  along = _dot(directions, prior_unit)  # [q]
  return jax.tree.map(lambda d, v: d - jnp.tensordot(along, v, axes=0), directions, prior_unit)


def with_prior(directions: PyTree, prior_unit: PyTree, dimensions: int) -> PyTree:
  """``[d_perp_1 .. d_perp_q, sqrt(D) v]``: the directions a prior-guided estimate
  probes. The prior gets the length ``sqrt(D)`` the random directions have on
  average, so its probes step as far as theirs: slopes measured over the same
  distance compare (the class term saturates over long steps)."""
  return jax.tree.map(lambda d, v: jnp.concatenate([d, np.sqrt(dimensions) * v[None]]),
                      orthogonal_to(directions, prior_unit), prior_unit)


def prior_weight(alpha_sq: jax.Array, dimensions: int, num_directions: int) -> jax.Array:
  """P-RGF's optimal weight ``lambda*`` of a prior whose squared cosine with the
  gradient is ``alpha_sq``, in ``D`` dimensions with ``q`` directions (Cheng et
  al. 2019, Eq. 12)::

    0                                                    alpha^2 <= 1 / (D + 2q - 2)
    (1 - a^2)(a^2 (D + 2q - 2) - 1) / (2 a^2 D q - a^4 D (D + 2q - 2) - 1)   between
    1                                                    alpha^2 >= (2q - 1) / (D + 2q - 2)

  Example::

    prior_weight(jnp.asarray(1 / 784), 784, 10)   # ~0.001: a random prior
  """
  d, q = float(dimensions), float(num_directions)
  span = d + 2 * q - 2
  middle = (1 - alpha_sq) * (alpha_sq * span - 1) / jnp.maximum(
      2 * alpha_sq * d * q - alpha_sq ** 2 * d * span - 1, 1e-12)
  return jnp.where(alpha_sq <= 1 / span, 0.0,
                   jnp.where(alpha_sq >= (2 * q - 1) / span, 1.0, jnp.clip(middle, 0.0, 1.0)))


def prior_guided_estimate(values: jax.Array, directions: PyTree, scale: float,
                          dimensions: int) -> tuple[PyTree, jax.Array, jax.Array]:
  """``(estimate, lambda, alpha^2)`` from the ``2(q + 1)`` values at
  :func:`probe_noises` of :func:`with_prior`'s directions (the last along the prior).

  ``a`` (the slope along the prior) and the slopes ``s_i`` along the orthogonal
  directions give ``alpha^2 = a^2 / (a^2 + mean s_i^2)`` (``E s_i^2`` is the squared
  norm of the gradient's part the directions span); the estimate is
  ``a v + (1 - lambda (1 - q / D)) (1/q) sum_i s_i d_perp_i``.
  """
  plus, minus = jnp.split(values, 2)
  slopes = (plus - minus) / (2.0 * scale)
  along_prior = jax.tree.map(lambda d: d[-1], directions)
  length = jnp.sqrt(_dot(along_prior, along_prior))
  along, across = slopes[-1] / length, slopes[:-1]  # along: the slope per unit of v.
  alpha_sq = along ** 2 / jnp.maximum(along ** 2 + jnp.mean(across ** 2), 1e-30)
  weight = prior_weight(alpha_sq, dimensions, across.shape[0])
  kept = 1 - weight * (1 - across.shape[0] / dimensions)
  estimate = jax.tree.map(
      lambda d: along * d[-1] / length + kept * jnp.tensordot(across, d[:-1], axes=1)
      / across.shape[0], directions)
  return estimate, weight, alpha_sq


def at_cosine(gradient: PyTree, key: jax.Array, cosine: float) -> PyTree:
  """``g + n``: the gradient plus Gaussian noise orthogonal to it, scaled so that
  ``cos(g + n, g) = cosine`` exactly::

    n = ||g|| sqrt(1 / c^2 - 1) * u,   u = unit(z - (z.g) g / ||g||^2),   z ~ N(0, I)

  The error of an unbiased estimate is approximately of this kind (NES:
  ``E[d d^T] = I``; its part along ``g`` and its length vary too), so white-box DFT
  with ``at_cosine`` gradients shows about what an estimator whose estimates have
  cosine ``c`` with the gradient can buy, whatever it is.

  Example::

    g = jnp.ones((4, 4, 1))
    cosine(at_cosine(g, jax.random.key(0), 0.1), g)   # 0.1
  """
  if not 0 < cosine <= 1:
    raise ValueError(f"The cosine must be in (0, 1], got {cosine}.")
  drawn = sample_directions(key, "nes", gradient, 1)
  across = unit(jax.tree.map(lambda d: d[0], orthogonal_to(drawn, unit(gradient))))
  length = jnp.sqrt(_dot(gradient, gradient) * (1.0 / cosine ** 2 - 1.0))
  return jax.tree.map(lambda g, n: g + length * n, gradient, across)


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
