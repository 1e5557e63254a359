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
