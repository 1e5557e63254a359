"""Your own frozen model: the registry of kinds, the ONNX kind end to end through DFT."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import own_model
from dfm import data, models
from dfm.black_box import JaxBlackBox, OnnxBlackBox
from dfm.models.input_spec import InputSpec
from dfm.run import loop, methods
from onnx_models import linear_classifier

PLAIN = {"size": (4, 4), "channels": 3, "channel_order": "RGB", "layout": "NCHW",
         "pixel_max": 1.0, "mean": (0.0,), "scale": 1.0}


def _config(path, *, output_kind="logits", num_classes=3, input_shape=(4, 4, 1), **model):
  config = ml_collections.ConfigDict({"model": own_model.foreign_model(
      str(path), input_spec=PLAIN, output_kind=output_kind, num_classes=num_classes,
      input_shape=input_shape)})
  config.model.update(model)
  return config


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
  path = tmp_path_factory.mktemp("onnx") / "linear.onnx"
  weights, bias = linear_classifier(path, input_shape=(3, 4, 4), num_classes=3,
                                    outputs=("logits", "probabilities"))
  return path, weights, bias


def _images(count=5, channels=1):
  return np.random.default_rng(0).uniform(size=(count, 4, 4, channels)).astype(np.float32)


def test_an_onnx_graph_is_differentiated_through_with_its_input_convention(linear):
  """The gray images are repeated to RGB and laid out NCHW, then flatten @ W + b."""
  path, weights, bias = linear
  apply_fn, params = models.load_frozen_classifier(_config(path, output_name="logits"))
  images = _images()
  tensor = np.repeat(images, 3, axis=-1).transpose(0, 3, 1, 2).reshape(len(images), -1)
  np.testing.assert_allclose(apply_fn(params, images), tensor @ weights + bias, atol=1e-5)
  grad = jax.grad(lambda x: apply_fn(params, x)[:, 1].sum())(jnp.asarray(images))
  expected = weights[:, 1].reshape(3, 4, 4).sum(axis=0)  # d logit_1 / d gray pixel.
  np.testing.assert_allclose(grad, np.broadcast_to(expected[..., None], grad.shape), atol=1e-5)


def test_probabilities_become_logits_that_softmax_back(linear):
  path, _, _ = linear
  apply_fn, params = models.load_frozen_classifier(
      _config(path, output_name="probabilities", output_kind="probabilities"))
  onnxruntime_model = OnnxBlackBox(path, InputSpec.from_config(PLAIN), input_name="images",
                                   output_name="probabilities", output_kind="probabilities",
                                   num_classes=3)
  np.testing.assert_allclose(jax.nn.softmax(apply_fn(params, _images())),
                             onnxruntime_model(_images()), atol=1e-5)
  black_box = JaxBlackBox(apply_fn, params, num_classes=3)  # Query-only through the graph.
  np.testing.assert_allclose(black_box(_images()), onnxruntime_model(_images()), atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"num_classes": 5}, r"outputs of shape \(3,\) per image but config\.model\.num_classes=5"),
    ({"input_shape": (5, 5, 1), "input": {**PLAIN, "size": (5, 5)}},
     r"cannot take images of config\.model\.input_shape=\(5, 5, 1\)"),
    ({"kind": "torchscript"}, r"config\.model\.kind='torchscript' is not one of"),
    ({"output_kind": "scores"}, r"config\.model\.output_kind='scores'"),
])
def test_a_model_that_does_not_fit_the_config_is_refused_naming_both(linear, change, message):
  path, _, _ = linear
  config = _config(path, output_name="logits")
  config.model.update(change)
  with pytest.raises(ValueError, match=message):
    models.load_frozen_classifier(config)


def test_white_box_dft_through_gender_v1_resumes_to_the_same_noise(tmp_path, monkeypatch):
  """configs/own_model.py:gender_v1 on lfw_subset fold 0: no classifier to train."""
  data_dir = str(tmp_path / "data")
  data.prepare("lfw_subset/25px_fold0", data_dir)
  config = own_model.get_config("gender_v1,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
  straight = methods.dft(config, str(tmp_path / "straight"))
  assert straight["before"]["num_examples"] == 20 and straight["after"]["psnr_db"] > 0
  run_loop, calls = loop.run_loop, [0]

  def interrupted(state, batches, update, **kwargs):
    def interrupting(state, batch):
      calls[0] += 1
      if calls[0] == 3:
        raise KeyboardInterrupt
      return update(state, batch)
    return run_loop(state, batches, interrupting, **kwargs)

  monkeypatch.setattr(loop, "run_loop", interrupted)
  with pytest.raises(KeyboardInterrupt):
    methods.dft(config, str(tmp_path / "resumed"))
  monkeypatch.setattr(loop, "run_loop", run_loop)
  resumed = methods.dft(config, str(tmp_path / "resumed"))
  np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "noise.npy"),
                                np.load(tmp_path / "straight" / "noise.npy"))
  assert resumed["after"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())[
      "after"]
