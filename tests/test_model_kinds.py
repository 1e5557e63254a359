"""config.model.kind flax (Linen and NNX, msgpack and orbax) and keras, as DFT sees them."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx, serialization

from configs import own_model
from dfm import models
from dfm.models.training import init_train_state, make_train_step, restrict_to_layers
from flax_models import LinenCnn, NnxCnn, NnxSequential

IMAGES = np.random.default_rng(0).uniform(size=(5, 6, 6, 1)).astype(np.float32)


def _config(**model) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"model": {"num_classes": 3, "input_shape": (6, 6, 1),
                                              "output_kind": "logits", **model}})


def _linen_variables():
  module = LinenCnn()
  variables = module.init(jax.random.key(1), IMAGES, train=False)
  variables["batch_stats"] = jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])
  return module, variables


def _save(tree, path, how):
  if how == "msgpack":
    path = path.with_suffix(".msgpack")
    path.write_bytes(serialization.to_bytes(tree))
  else:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(path.absolute(), tree)
  return str(path)


@pytest.mark.parametrize("how", ["msgpack", "orbax"])
def test_a_linen_module_by_import_path_gives_its_own_logits(tmp_path, how):
  module, variables = _linen_variables()
  path = _save(variables, tmp_path / "linen", how)
  apply_fn, params = models.load_frozen_classifier(_config(
      kind="flax", module="flax_models:LinenCnn", params=path, call_kwargs={"train": False}))
  expected = module.apply(variables, IMAGES, train=False)
  np.testing.assert_allclose(apply_fn(params, IMAGES), expected, atol=1e-5)
  grad = jax.grad(lambda x: apply_fn(params, x)[:, 0].sum())(jnp.asarray(IMAGES))
  reference = jax.grad(lambda x: module.apply(variables, x, train=False)[:, 0].sum())(IMAGES)
  np.testing.assert_allclose(grad, reference, atol=1e-5)


def test_an_nnx_module_from_a_file_path_runs_in_eval_mode(tmp_path):
  model = NnxCnn(1, 3, rngs=nnx.Rngs(7))
  path = _save(nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState))), tmp_path / "nnx", "msgpack")
  apply_fn, params = models.load_frozen_classifier(_config(
      kind="flax", module="tests/flax_models.py:NnxCnn", params=path,
      kwargs={"channels": 1, "num_classes": 3}))
  model.eval()
  np.testing.assert_allclose(apply_fn(params, IMAGES), model(jnp.asarray(IMAGES)), atol=1e-5)
  np.testing.assert_allclose(apply_fn(params, IMAGES), apply_fn(params, IMAGES))  # No dropout.


@pytest.mark.parametrize("how", ["msgpack", "orbax"])
def test_nnx_layers_keyed_by_integers_round_trip(tmp_path, how):
  model = NnxSequential(rngs=nnx.Rngs(3))
  path = _save(nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState))), tmp_path / "seq", how)
  apply_fn, params = models.load_frozen_classifier(_config(
      kind="flax", module="flax_models:NnxSequential", params=path))
  np.testing.assert_allclose(apply_fn(params, IMAGES), model(jnp.asarray(IMAGES)), atol=1e-5)


@pytest.mark.parametrize("model, message", [
    ({"module": "flax_models:LinenCnn", "kwargs": {"features": 5}},
     r"do not fit LinenCnn\(\*\*\{'features': 5\}\): .*\['params'\]\['Conv_0'\]\['bias'\]: "
     r"checkpoint \(4,\) vs config \(5,\)"),
    ({"module": "flax_models:LinenCnn", "kwargs": {"num_classes": 2}},
     r"Dense_0.*checkpoint \(4, 3\) vs config \(4, 2\)"),
    ({"module": "flax_models:Missing"}, r"flax_models has no 'Missing'"),
    ({"module": "no_such_package.models:Cnn"}, r"cannot import 'no_such_package.models'"),
    ({"module": "LinenCnn"}, r"must be 'package.module:Class'"),
    ({"module": "flax_models:jnp"}, r"is not a Flax Linen or NNX Module class"),
    ({"module": "flax_models:LinenCnn", "call_kwargs": {}},
     r"cannot run as a frozen classifier .*call_kwargs=\{\}.*'\{\"train\": false\}'"),
])
def test_a_module_that_does_not_fit_its_params_is_refused_naming_both(tmp_path, model, message):
  _, variables = _linen_variables()
  path = _save(variables, tmp_path / "linen", "msgpack")
  with pytest.raises(ValueError, match=message):
    models.load_frozen_classifier(_config(kind="flax", params=path,
                                          **{"call_kwargs": {"train": False}, **model}))


def test_missing_params_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"No saved params at .*nowhere.msgpack"):
    models.load_frozen_classifier(_config(kind="flax", module="flax_models:LinenCnn",
                                          params=str(tmp_path / "nowhere.msgpack")))


def test_a_keras_file_runs_on_jax_and_is_differentiated_through(tmp_path):
  os.environ.setdefault("KERAS_BACKEND", "jax")  # As dfm.models.keras_file sets it.
  keras = pytest.importorskip("keras", reason="the optional extra: pip install -e '.[keras]'")
  if keras.backend.backend() != "jax":
    pytest.skip("Keras was imported on another backend in this process.")
  model = keras.Sequential([
      keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
      keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(3, activation="softmax")])
  path = tmp_path / "model.keras"
  model.save(path)
  expected = np.asarray(model(IMAGES, training=False))
  apply_fn, params = models.load_frozen_classifier(
      _config(kind="keras", path=str(path), output_kind="probabilities"))
  np.testing.assert_allclose(jax.nn.softmax(apply_fn(params, IMAGES)), expected, atol=1e-5)
  grad = jax.grad(lambda x: jax.nn.softmax(apply_fn(params, x))[:, 1].sum())(
      jnp.asarray(IMAGES))
  reference = jax.grad(lambda x: model(x, training=False)[:, 1].sum())(jnp.asarray(IMAGES))
  np.testing.assert_allclose(grad, reference, atol=1e-5)


def test_mft_moves_only_the_trainable_weights_of_a_foreign_model():
  """The fixed part (here an integer seed, as Keras keeps for Dropout) is never
  differentiated nor moved."""
  params = {"trainable": {"w": jnp.ones(3)},
            "fixed": {"mean": jnp.ones(3), "seed": jnp.array([7, 8], jnp.uint32)}}
  optimizer = restrict_to_layers(optax.sgd(0.1), params, "all")
  step = make_train_step(lambda p, x: x.reshape(2, 3) * p["trainable"]["w"] + p["fixed"]["mean"],
                         optimizer)
  batch = {"image": jnp.ones((2, 3)), "label": jnp.array([0, 1]), "mask": jnp.ones(2)}
  state, metrics = step(init_train_state(params, optimizer), batch)
  assert not np.allclose(state["params"]["trainable"]["w"], 1.0)
  np.testing.assert_array_equal(state["params"]["fixed"]["mean"], 1.0)
  np.testing.assert_array_equal(state["params"]["fixed"]["seed"], [7, 8])
  assert float(metrics["grad_norm"]) > 0
  with pytest.raises(ValueError, match=r"a model of your own fine-tunes all its trainable "
                     r"weights: --config.mft.layers=all"):
    restrict_to_layers(optax.sgd(0.1), params, "head")


def test_configs_own_model_flax_takes_its_arguments_as_json_flags(tmp_path):
  """What --config.model.kwargs='{"features": 4}' gives: JSON text, parsed at load."""
  module, variables = _linen_variables()
  config = own_model.get_config("flax,runlocal")
  with config.unlocked():
    config.model.update(module="flax_models:LinenCnn", params=_save(variables, tmp_path / "v",
                                                                    "msgpack"),
                        kwargs='{"features": 4}', call_kwargs='{"train": false}',
                        num_classes=3, input_shape=(6, 6, 1))
  apply_fn, params = models.load_frozen_classifier(config)
  np.testing.assert_allclose(apply_fn(params, IMAGES), module.apply(variables, IMAGES,
                                                                    train=False), atol=1e-5)
  with config.unlocked():
    config.model.kwargs = "{features: 4}"
  with pytest.raises(ValueError, match=r"config.model.kwargs='\{features: 4\}' is not JSON"):
    models.load_frozen_classifier(config)
