"""Perturbation transforms: identity at zero noise, range, gradients, shapes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfm.transform import TRANSFORMS, perturb, resize_noise

IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 1)), jnp.float32)
EDGES = jnp.asarray([0.0, 1.0, 0.5, 0.0]).reshape(1, 2, 2, 1)


def test_tanh_is_identity_at_zero_noise():
  z = perturb(IMAGES, jnp.zeros((8, 8, 1)))
  np.testing.assert_allclose(z, IMAGES, atol=1e-6)


def test_tanh_is_identity_at_zero_noise_on_exact_edges():
  np.testing.assert_allclose(perturb(EDGES, jnp.zeros((2, 2, 1))), EDGES, atol=1e-6)


def test_paper_literal_changes_images_at_zero_noise():
  z = perturb(IMAGES, jnp.zeros((8, 8, 1)), transform="paper_literal")
  np.testing.assert_allclose(z, 0.5 * (np.tanh(IMAGES) + 1), rtol=1e-6)
  assert np.abs(z - IMAGES).max() > 0.1


@pytest.mark.parametrize("kind", list(TRANSFORMS))
def test_output_stays_in_unit_range(kind):
  noise = 50.0 * jnp.asarray(np.random.default_rng(1).normal(size=(8, 8, 1)), jnp.float32)
  z = perturb(IMAGES, noise, transform=kind)
  assert z.shape == IMAGES.shape
  assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0


@pytest.mark.parametrize("kind", ["tanh", "paper_literal"])
def test_gradients_are_finite_at_pixels_zero_and_one(kind):
  grad = jax.grad(lambda n: perturb(EDGES, n, transform=kind).sum())(jnp.zeros((2, 2, 1)))
  assert np.all(np.isfinite(grad))


def test_tanh_gradient_is_largest_at_mid_grey():
  grad = jax.grad(lambda n: perturb(EDGES, n).sum())(jnp.zeros((2, 2, 1)))
  # dZ/dN = 0.5 (1 - tanh^2) = 2 X (1 - X): 0.5 at X = 0.5, ~0 at the edges.
  np.testing.assert_allclose(grad[..., 0], [[0.0, 0.0], [0.5, 0.0]], atol=1e-5)


def test_coarse_noise_is_resized_up_to_the_image():
  noise = jnp.ones((4, 4, 1))
  assert resize_noise(noise, (8, 8, 1)).shape == (8, 8, 1)
  np.testing.assert_allclose(resize_noise(noise, (8, 8, 1)), 1.0, atol=1e-6)
  assert perturb(IMAGES, noise).shape == IMAGES.shape


@pytest.mark.parametrize("shape", [(8, 8, 3), (16, 16, 1), (8, 8)])
def test_noise_that_does_not_fit_the_images_is_refused(shape):
  with pytest.raises(ValueError, match="does not fit images of shape"):
    perturb(IMAGES, jnp.zeros(shape))


def test_unknown_kind_is_refused():
  with pytest.raises(ValueError, match="Unknown transform"):
    perturb(IMAGES, jnp.zeros((8, 8, 1)), transform="tahn")
