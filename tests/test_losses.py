"""Loss terms against hand-computed values."""
import jax.numpy as jnp
import numpy as np
import pytest

from dfm import losses


def test_true_class_hinge_is_one_minus_true_probability():
  probs = jnp.array([[0.9, 0.1], [0.3, 0.7]])
  value = losses.true_class_hinge(probs=probs, labels=jnp.array([0, 0]))
  np.testing.assert_allclose(value, (0.1 + 0.7) / 2, rtol=1e-6)


def test_weights_hide_padding_rows():
  probs = jnp.array([[0.9, 0.1], [0.3, 0.7]])
  value = losses.true_class_hinge(probs=probs, labels=jnp.array([0, 0]),
                                  weights=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(value, 0.1, rtol=1e-5)


def test_appearance_distance_is_mean_of_per_image_squared_frobenius_norms():
  x = jnp.zeros((2, 2, 2, 1))
  z = x.at[0].set(0.5)
  np.testing.assert_allclose(losses.appearance_distance(images=x, perturbed=z), 0.5)


def test_softmax_xent_of_uniform_logits_is_log_classes():
  value = losses.softmax_xent(logits=jnp.zeros((3, 4)), labels=jnp.array([0, 1, 3]))
  np.testing.assert_allclose(value, np.log(4), rtol=1e-6)


def test_dft_objective_adds_lam_times_appearance():
  logits = jnp.log(jnp.array([[0.8, 0.2]]))
  x = jnp.zeros((1, 2, 2, 1))
  z = x + 0.1
  loss, terms = losses.dft_objective(logits=logits, labels=jnp.array([0]), images=x,
                                     perturbed=z, lam=2.0)
  np.testing.assert_allclose(terms["class_term"], 0.2, rtol=1e-5)
  np.testing.assert_allclose(terms["appearance"], 0.04, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.2 + 2.0 * 0.04, rtol=1e-5)


def test_dft_objective_with_xent():
  logits = jnp.zeros((1, 2))
  x = jnp.zeros((1, 1, 1, 1))
  loss, _ = losses.dft_objective(logits=logits, labels=jnp.array([1]), images=x,
                                 perturbed=x, lam=1.0, class_term="xent")
  np.testing.assert_allclose(loss, np.log(2), rtol=1e-6)


def test_loss_terms_are_keyword_only():
  with pytest.raises(TypeError):
    losses.true_class_hinge(jnp.ones((1, 2)), jnp.array([0]))  # pylint: disable=too-many-function-args
