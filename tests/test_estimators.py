"""Query-only gradient estimates: unbiased on linear objectives, close on smooth ones,
one batched call per estimate, and the objective is never differentiated."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfm import estimators

SHAPE = (6, 6, 1)
WEIGHTS = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


def _host_objective(calls: list[int]):
  """A smooth objective computed in NumPy on the host: tracing it would fail."""

  def objective(noises):
    calls.append(len(noises))
    noises = np.asarray(noises)  # Raises for a tracer: nothing may differentiate this.
    return (noises * WEIGHTS).sum(axis=(1, 2, 3)) + 0.5 * (noises**2).sum(axis=(1, 2, 3))

  return objective


def _cosine(a, b) -> float:
  a, b = np.ravel(a), np.ravel(b)
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("kind", estimators.ESTIMATORS)
def test_estimate_points_along_the_true_gradient_with_one_call(kind):
  calls = []
  noise = jnp.full(SHAPE, 0.1)
  estimate = estimators.estimate_gradient(_host_objective(calls), noise, jax.random.key(0),
                                          estimator=kind, num_directions=400, scale=0.01)
  assert calls == [800]  # All 2q probes in one batched call.
  assert _cosine(estimate, WEIGHTS + 0.1) > 0.9


@pytest.mark.parametrize("kind", estimators.ESTIMATORS)
def test_estimate_is_unbiased_for_a_linear_objective(kind):
  def linear(noises):
    return jnp.sum(noises * WEIGHTS, axis=(1, 2, 3))

  keys = jax.random.split(jax.random.key(1), 2000)
  estimates = jax.vmap(lambda key: estimators.estimate_gradient(
      linear, jnp.zeros(SHAPE), key, estimator=kind, num_directions=10, scale=0.1))(keys)
  np.testing.assert_allclose(estimates.mean(axis=0), WEIGHTS, atol=0.25)
  assert _cosine(estimates.mean(axis=0), WEIGHTS) > 0.99


def test_spsa_directions_are_signs_and_nes_directions_gaussian():
  signs = estimators.sample_directions(jax.random.key(2), "spsa", SHAPE, 50)
  assert signs.shape == (50, *SHAPE) and set(np.unique(signs)) == {-1.0, 1.0}
  gaussian = estimators.sample_directions(jax.random.key(2), "nes", SHAPE, 500)
  assert abs(float(gaussian.std()) - 1.0) < 0.05


def test_bad_arguments_are_explained():
  with pytest.raises(ValueError, match="spsa"):
    estimators.sample_directions(jax.random.key(0), "fd", SHAPE, 4)
  with pytest.raises(ValueError, match="one value per noise"):
    estimators.estimate_gradient(lambda noises: jnp.zeros(3), jnp.zeros(SHAPE),
                                 jax.random.key(0), estimator="nes", num_directions=4, scale=0.1)
  with pytest.raises(ValueError, match="positive"):
    estimators.estimate_gradient(lambda noises: jnp.zeros(8), jnp.zeros(SHAPE),
                                 jax.random.key(0), estimator="nes", num_directions=4, scale=0.0)


# The priors: a smooth objective on a 28x28 noise whose gradient at 0 is low-frequency
# (a smooth bump), plus a quadratic.
BUMP = np.exp(-((np.arange(28)[:, None] - 12.0) ** 2 + (np.arange(28)[None, :] - 15.0) ** 2)
              / 60.0)[..., None].astype(np.float32)


def _bump_objective(noises):
  return jnp.sum(noises * BUMP, axis=(1, 2, 3)) + 0.5 * jnp.sum(noises ** 2, axis=(1, 2, 3))


def test_dct_directions_are_orthonormal_low_frequency_patterns():
  rows = estimators.dct_rows(28, 7)
  np.testing.assert_allclose(rows @ rows.T, np.eye(7), atol=1e-5)
  directions = estimators.sample_directions(jax.random.key(0), "nes", jnp.zeros((28, 28, 1)),
                                            2000, frequencies=7)
  # E ||d||^2 = the 49 dimensions spanned, not 784.
  assert float(jnp.mean(jnp.sum(directions ** 2, axis=(1, 2, 3)))) == pytest.approx(49, rel=0.1)
  assert estimators.search_dimensions(jnp.zeros((28, 28, 1)), 7) == 49


def test_a_low_frequency_basis_estimates_a_smooth_gradient_from_fewer_queries():
  """With q = 10 directions (20 probes): pixels give cosine ~sqrt(q / 784) ~ 0.11, the
  8x8 lowest frequencies ~ sqrt(q / 64) ~ 0.4 with the bump's gradient (measured
  over 8 keys: 0.35-0.5 against 0.05-0.16)."""
  def cosine(frequencies, seed):
    directions = estimators.sample_directions(jax.random.key(seed), "nes",
                                              jnp.zeros((28, 28, 1)), 10,
                                              frequencies=frequencies)
    values = _bump_objective(estimators.probe_noises(jnp.zeros((28, 28, 1)), directions, 1e-3))
    return _cosine(estimators.combine(values, directions, 1e-3), BUMP)
  pixels = np.mean([cosine(0, seed) for seed in range(8)])
  low = np.mean([cosine(8, seed) for seed in range(8)])
  assert pixels < 0.2 and low > 0.3


def _prior_guided(prior, seed):
  directions = estimators.with_prior(
      estimators.sample_directions(jax.random.key(seed), "nes", jnp.zeros((28, 28, 1)), 10),
      estimators.unit(prior), 28 * 28)
  values = _bump_objective(estimators.probe_noises(jnp.zeros((28, 28, 1)), directions, 1e-3))
  return estimators.prior_guided_estimate(values, directions, 1e-3, 28 * 28)


def test_a_random_prior_gets_no_weight_and_costs_nothing():
  """A prior unrelated to the gradient (cosine ~ 1/28): P-RGF's weight ~0 (measured:
  0 to 0.05 over 8 keys, mean 0.013), and the estimate is plain NES with one more
  direction (cosine ~0.1, as without)."""
  weights, cosines = [], []
  for seed in range(8):
    prior = jax.random.normal(jax.random.key(100 + seed), (28, 28, 1))
    estimate, weight, _ = _prior_guided(prior, seed)
    weights.append(float(weight))
    cosines.append(_cosine(estimate, BUMP))
  assert np.mean(weights) < 0.03 and max(weights) < 0.1
  assert np.mean(cosines) > 0.05


def test_a_good_prior_is_trusted_in_proportion_to_its_measured_cosine():
  """The prior at cosine ~0.7 with the gradient: alpha^2 is measured from the queries
  (~0.5), P-RGF's weight is 1 and the estimate follows it (cosine > 0.6); the exact
  gradient as prior gives the gradient itself."""
  noisy = BUMP + np.linalg.norm(BUMP) / 28 * np.random.default_rng(0).normal(
      size=BUMP.shape).astype(np.float32)
  estimate, weight, alpha_sq = _prior_guided(jnp.asarray(noisy), 0)
  assert float(weight) == 1.0 and 0.3 < float(alpha_sq) < 0.7
  assert _cosine(estimate, BUMP) > 0.6
  estimate, _, _ = _prior_guided(jnp.asarray(BUMP), 0)
  assert _cosine(estimate, BUMP) > 0.999


def test_the_prior_is_probed_as_far_as_the_random_directions():
  directions = estimators.with_prior(jnp.zeros((3, 28, 28, 1)),
                                     estimators.unit(jnp.asarray(BUMP)), 28 * 28)
  assert float(jnp.linalg.norm(directions[-1])) == pytest.approx(28.0, rel=1e-5)


@pytest.mark.parametrize("cosine", [1.0, 0.5, 0.1])
def test_a_gradient_at_a_cosine_has_exactly_that_cosine(cosine):
  gradient = {"coarse": jnp.arange(8.0).reshape(2, 2, 2), "fine": jnp.ones((4, 4, 1))}
  degraded = estimators.at_cosine(gradient, jax.random.key(3), cosine)
  error = jax.tree.map(jnp.subtract, degraded, gradient)
  assert float(estimators.cosine(degraded, gradient)) == pytest.approx(cosine, abs=1e-5)
  # The error is orthogonal to the gradient: its part along the gradient is exact.
  assert float(estimators._dot(error, gradient)) == pytest.approx(0.0, abs=1e-3)


def test_a_cosine_outside_zero_to_one_is_refused():
  for cosine in (0.0, -0.5, 1.5):
    with pytest.raises(ValueError, match="cosine must be in"):
      estimators.at_cosine(jnp.ones((2, 2, 1)), jax.random.key(0), cosine)
