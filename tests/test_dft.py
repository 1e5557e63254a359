"""The DFT update step: what it changes, what it leaves alone, how often it compiles."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dfm import models
from dfm.dft import init_state, make_update_step
from dfm.parallel import data_mesh, jit_step, pmap_step, sharded_jit_step

SHAPE = (12, 12, 1)


@pytest.fixture(scope="module")
def classifier():
  module = models.VGG(blocks=((4,), (8,)), dense=(16,), num_classes=3)
  return models.make_apply_fn(module), models.init_params(module, SHAPE, seed=0)


def make_batch(seed: int, size: int = 16, padded: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  mask = np.ones(size, np.float32)
  mask[size - padded:] = 0.0
  return {"image": jnp.asarray(rng.uniform(size=(size, *SHAPE)), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 3, size), jnp.int32),
          "mask": jnp.asarray(mask)}


def test_step_changes_the_noise_and_nothing_else(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))
  state = init_state(SHAPE, optimizer)
  params_before = jax.tree.map(np.array, params)
  batch = make_batch(0)
  batch_before = jax.tree.map(np.array, batch)
  new_state, metrics = step(state, params, batch)
  assert float(jnp.abs(new_state["noise"]).max()) > 0
  assert int(new_state["step"]) == 1
  jax.tree.map(np.testing.assert_array_equal, params, params_before)
  jax.tree.map(np.testing.assert_array_equal, batch, batch_before)
  assert set(metrics) >= {"loss", "class_term", "appearance", "accuracy", "grad_norm"}


def test_optimizer_state_holds_only_the_noise(classifier):
  optimizer = optax.adam(1e-2)
  state = init_state(SHAPE, optimizer)
  shapes = {leaf.shape for leaf in jax.tree.leaves(state["opt"])}
  assert shapes <= {(), SHAPE}


def test_params_are_an_argument_not_a_constant(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))
  state, batch = init_state(SHAPE, optimizer), make_batch(0)
  other_params = jax.tree.map(lambda p: p * 1.5, params)
  _, first = step(state, params, batch)
  _, second = step(state, other_params, batch)
  assert step._cache_size() == 1
  assert float(first["loss"]) != float(second["loss"])


def test_one_compilation_over_an_epoch_with_a_padded_last_batch(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jit_step(chex.assert_max_traces(make_update_step(apply_fn, optimizer, lam=0.01), n=1))
  state = init_state(SHAPE, optimizer)
  for batch in (make_batch(0), make_batch(1), make_batch(2, padded=11)):
    for _ in range(3):
      state, _ = step(state, params, batch)
  assert step._cache_size() == 1


def test_padding_rows_do_not_change_the_update(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))
  state = init_state(SHAPE, optimizer)
  batch = make_batch(0, padded=6)
  garbage = dict(batch, image=batch["image"].at[10:].set(0.9))
  a, _ = step(state, params, batch)
  b, _ = step(state, params, garbage)
  np.testing.assert_allclose(a["noise"], b["noise"], atol=1e-7)


def _run(step, params, batches, optimizer):
  state = init_state(SHAPE, optimizer)
  for batch in batches:
    state, metrics = step(state, params, batch)
  return np.asarray(state["noise"]), metrics


@pytest.mark.parametrize("padded", [0, 7])
def test_multi_device_steps_match_single_device(classifier, padded):
  assert jax.device_count() == 4, "tests/conftest.py simulates 4 CPU devices"
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  batches = [make_batch(seed, padded=padded) for seed in range(5)]
  make = lambda axis_name: make_update_step(apply_fn, optimizer, lam=0.01, axis_name=axis_name)
  single, single_metrics = _run(jit_step(make(None)), params, batches, optimizer)
  sharded, _ = _run(sharded_jit_step(make(None), data_mesh()), params, batches, optimizer)
  pmapped, pmap_metrics = _run(pmap_step(make), params, batches, optimizer)
  np.testing.assert_allclose(sharded, single, atol=1e-5)
  np.testing.assert_allclose(pmapped, single, atol=1e-5)
  np.testing.assert_allclose(pmap_metrics["loss"], single_metrics["loss"], rtol=1e-5)
  assert np.abs(single).max() > 0


def test_batch_that_does_not_split_over_devices_is_refused(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = sharded_jit_step(make_update_step(apply_fn, optimizer, lam=0.01), data_mesh())
  with pytest.raises(ValueError, match="multiple of 4"):
    step(init_state(SHAPE, optimizer), params, make_batch(0, size=10))
