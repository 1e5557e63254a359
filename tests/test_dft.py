"""The DFT update step: what it changes, what it leaves alone, how often it compiles."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dfm import models
from dfm.dft import init_state, make_loss_fn, make_update_step
from dfm.parallel import data_mesh, jit_step, place, pmap_step, select_step, sharded_jit_step
from dfm.run.evaluate import make_eval_step

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
  state = init_state(jnp.zeros(SHAPE), optimizer)
  params_before = jax.tree.map(np.array, params)
  batch = make_batch(0)
  batch_before = jax.tree.map(np.array, batch)
  new_state, metrics = step(state, params, batch)
  assert float(jnp.abs(new_state["noise"]).max()) > 0
  assert int(new_state["step"]) == 1
  jax.tree.map(np.testing.assert_array_equal, params, params_before)
  jax.tree.map(np.testing.assert_array_equal, batch, batch_before)
  assert set(metrics) >= {"loss", "class_term", "appearance", "accuracy", "grad_norm"}


def test_params_get_no_gradient_and_no_optimizer_state(classifier):
  """The optimizer sees only the noise: a step's update of the noise equals the
  optimizer applied to the noise's gradient alone, and no params leaf is in its state."""
  apply_fn, params = classifier
  optimizer = optax.sgd(0.5)
  state = init_state(jnp.zeros(SHAPE), optimizer)
  batch = make_batch(0)
  grad, _ = jax.grad(make_loss_fn(apply_fn, lam=0.01), has_aux=True)(state["noise"], params, batch)
  new_state, _ = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))(state, params, batch)
  np.testing.assert_allclose(new_state["noise"], -0.5 * grad, rtol=1e-5, atol=1e-8)
  adam_state = init_state(jnp.zeros(SHAPE), optax.adam(1e-2))["opt"]
  param_sizes = {leaf.size for leaf in jax.tree.leaves(params)} - {int(np.prod(SHAPE))}
  assert not {leaf.size for leaf in jax.tree.leaves(adam_state)} & param_sizes


def test_init_state_starts_from_the_given_noise_of_any_float_dtype(classifier):
  apply_fn, params = classifier
  start = jnp.full(SHAPE, 0.25, jnp.bfloat16)
  optimizer = optax.chain(optax.scale_by_param_block_norm(), optax.scale(-0.1))
  state = init_state(start, optimizer)
  assert state["noise"].dtype == jnp.bfloat16 and float(state["noise"][0, 0, 0]) == 0.25
  new_state, metrics = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))(
      state, params, make_batch(0))
  assert new_state["noise"].dtype == jnp.bfloat16
  assert not np.array_equal(np.asarray(new_state["noise"], np.float32), np.full(SHAPE, 0.25))
  assert np.isfinite(float(metrics["loss"]))


def test_a_pytree_noise_runs_through_the_step_and_is_summed(classifier):
  apply_fn, params = classifier
  noise = {"coarse": jnp.zeros((3, 3, 1)), "fine": jnp.zeros(SHAPE)}
  optimizer = optax.adam(1e-2)
  step = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))
  state, metrics = step(init_state(noise, optimizer), params, make_batch(0))
  assert jax.tree.map(jnp.shape, state["noise"]) == {"coarse": (3, 3, 1), "fine": SHAPE}
  assert all(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(state["noise"]))
  leaves = [np.abs(np.asarray(leaf)).max() for leaf in jax.tree.leaves(state["noise"])]
  assert float(metrics["noise_linf"]) == pytest.approx(max(leaves))


def test_a_class_term_of_ones_own_is_plugged_in_by_function(classifier):
  apply_fn, params = classifier
  margin = lambda *, logits, labels: -jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
  loss_fn = jax.jit(make_loss_fn(apply_fn, lam=0.0, class_term=margin))
  batch = make_batch(0)
  loss, _ = loss_fn(jnp.zeros(SHAPE), params, batch)
  logits = apply_fn(params, batch["image"])
  expected = -np.mean(np.take_along_axis(np.asarray(logits), np.asarray(batch["label"])[:, None], 1))
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def _shifted_halves(size: int = 64) -> tuple:
  """A frozen "left half brighter?" classifier, and target images whose left half is
  0.15 darker than the source's: a shift one universal noise can undo."""
  rng = np.random.default_rng(0)
  left, right = rng.uniform(0.3, 0.7, (2, size))
  images = np.empty((size, *SHAPE), np.float32)
  images[:, :, :6], images[:, :, 6:] = (left - 0.15)[:, None, None, None], right[:, None, None, None]
  batch = {"image": jnp.asarray(images), "label": jnp.asarray((right > left).astype(np.int32))}

  def apply_fn(params, x):
    contrast = x[:, :, :6].mean(axis=(1, 2, 3)) - x[:, :, 6:].mean(axis=(1, 2, 3))
    return params * jnp.stack([contrast, -contrast], axis=-1)

  return apply_fn, jnp.float32(20.0), batch


def test_a_real_dft_loop_lowers_the_loss_and_raises_train_accuracy():
  """The real jitted step, 30 updates on the shifted images: the loss falls and
  the frozen classifier gets most of the images it got wrong right."""
  apply_fn, params, batch = _shifted_halves()
  optimizer = optax.adam(0.05)
  step = jit_step(make_update_step(apply_fn, optimizer, lam=1e-3))
  state, first = step(init_state(jnp.zeros(SHAPE), optimizer), params, batch)
  for _ in range(30):
    state, last = step(state, params, batch)
  assert float(first["accuracy"]) < 0.8
  assert float(last["loss"]) < 0.5 * float(first["loss"])
  assert float(last["accuracy"]) >= float(first["accuracy"]) + 0.25
  assert float(jnp.mean(state["noise"][:, :6])) > float(jnp.mean(state["noise"][:, 6:]))


@pytest.mark.parametrize("mode", ["single", "sharded"])
def test_steps_copy_nothing_from_the_host_once_placed(classifier, mode):
  """Frozen params and state placed once: with host transfers disallowed, every
  step and evaluation still runs (only the batch is put on the device, explicitly);
  params left on the host fail."""
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = select_step(mode, lambda axis: make_update_step(apply_fn, optimizer, lam=0.01))
  params = place(jax.tree.map(np.asarray, params), mode)
  state = place(init_state(jnp.zeros(SHAPE), optimizer), mode)
  batches = [jax.tree.map(np.asarray, make_batch(seed)) for seed in range(3)]
  eval_step = make_eval_step(apply_fn)
  state, _ = step(state, params, batches[0])  # Compiles.
  eval_step(params, state["noise"], batches[0])
  with jax.transfer_guard_host_to_device("disallow"):
    for batch in batches:
      state, metrics = step(state, params, batch)
      probabilities, _ = eval_step(params, state["noise"], batch)
  with pytest.raises(Exception, match="[Dd]isallowed"), \
       jax.transfer_guard_host_to_device("disallow"):
    step(state, jax.tree.map(np.asarray, params), batches[0])
  assert np.isfinite(float(metrics["loss"])) and probabilities.shape == (16, 3)


def test_params_are_an_argument_not_a_constant(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))
  state, batch = init_state(jnp.zeros(SHAPE), optimizer), make_batch(0)
  other_params = jax.tree.map(lambda p: p * 1.5, params)
  _, first = step(state, params, batch)
  _, second = step(state, other_params, batch)
  assert step._cache_size() == 1
  assert float(first["loss"]) != float(second["loss"])


def test_one_compilation_over_an_epoch_with_a_padded_last_batch(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jit_step(chex.assert_max_traces(make_update_step(apply_fn, optimizer, lam=0.01), n=1))
  state = init_state(jnp.zeros(SHAPE), optimizer)
  for batch in (make_batch(0), make_batch(1), make_batch(2, padded=11)):
    for _ in range(3):
      state, _ = step(state, params, batch)


def test_padding_rows_do_not_change_the_update(classifier):
  apply_fn, params = classifier
  optimizer = optax.adam(1e-2)
  step = jax.jit(make_update_step(apply_fn, optimizer, lam=0.01))
  state = init_state(jnp.zeros(SHAPE), optimizer)
  batch = make_batch(0, padded=6)
  garbage = dict(batch, image=batch["image"].at[10:].set(0.9))
  a, _ = step(state, params, batch)
  b, _ = step(state, params, garbage)
  np.testing.assert_allclose(a["noise"], b["noise"], atol=1e-7)


def _run(step, params, batches, optimizer):
  state = init_state(jnp.zeros(SHAPE), optimizer)
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
    step(init_state(jnp.zeros(SHAPE), optimizer), params, make_batch(0, size=10))
