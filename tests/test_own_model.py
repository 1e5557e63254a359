"""Your own frozen model: the registry of kinds, the ONNX kind end to end through DFT."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data
from PIL import Image

from configs import own_model, query
from dfm import data, models
from dfm.black_box import JaxBlackBox, OnnxBlackBox
from dfm.models.input_spec import InputSpec
from dfm.data import lfw_subset
from dfm.run import evaluate as run_evaluate
from dfm.run import loop, methods
from dfm.studies import compare
import torch_models
from onnx_models import linear_classifier

PLAIN = {"size": (4, 4), "channels": 3, "channel_order": "RGB", "layout": "NCHW",
         "pixel_max": 1.0, "mean": (0.0,), "scale": 1.0}


def _config(path, *, output_kind="logits", num_classes=3, input_shape=(4, 4, 1), **model):
  config = ml_collections.ConfigDict({"model": own_model.foreign_model(
      "onnx", path=str(path), input_spec=PLAIN, output_kind=output_kind, num_classes=num_classes,
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


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
  """The 100 LFW faces as PNGs in class subfolders, prepared as image_folder/25px_gray."""
  root = tmp_path_factory.mktemp("faces")
  faces = skimage.data.lfw_subset()[:100]
  for index, (face, male) in enumerate(zip(faces, lfw_subset.load_labels()["male"])):
    folder = root / "folder" / ("1_man" if male else "0_woman")  # gender-v1's order.
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(255 * face).astype(np.uint8)).save(folder / f"{index}.png")
  data_dir = str(root / "data")
  data.prepare("image_folder/25px_gray", data_dir, manual_dir=str(root / "folder"))
  return data_dir


def _gender_v1_on_folder(data_dir: str) -> ml_collections.ConfigDict:
  """configs/own_model.py:onnx as a user fills it in for gender-v1 on their folder."""
  config = own_model.get_config("onnx,dataset=image_folder/25px_gray,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    config.eval_batch_size = 20
    config.model.update(path=query.GENDER_V1, input=query.GENDER_V1_INPUT,
                        output_kind="probabilities", input_shape=(25, 25, 1))
  return config


def _interrupting_run_loop(monkeypatch, at_update: int) -> None:
  run_loop, calls = loop.run_loop, [0]

  def interrupted(state, batches, update, **kwargs):
    def interrupting(state, batch):
      calls[0] += 1
      if calls[0] == at_update:
        raise KeyboardInterrupt
      return update(state, batch)
    return run_loop(state, batches, interrupting, **kwargs)

  monkeypatch.setattr(loop, "run_loop", interrupted)


def test_white_box_dft_on_an_image_folder_resumes_to_the_same_noise(face_folder, tmp_path,
                                                                   monkeypatch):
  """gender-v1's graph on the user's folder of faces: evaluate, then DFT, no training step."""
  config = _gender_v1_on_folder(face_folder)
  frozen = run_evaluate.evaluate_frozen(config)
  straight = methods.dft(config, str(tmp_path / "straight"))
  assert straight["before"]["num_examples"] == 20 and straight["after"]["psnr_db"] > 0
  assert straight["before"]["accuracy"] == frozen["test"]["accuracy"]
  with monkeypatch.context() as patch:
    _interrupting_run_loop(patch, at_update=3)
    with pytest.raises(KeyboardInterrupt):
      methods.dft(config, str(tmp_path / "resumed"))
  resumed = methods.dft(config, str(tmp_path / "resumed"))
  np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "noise.npy"),
                                np.load(tmp_path / "straight" / "noise.npy"))
  assert resumed["after"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())[
      "after"]
  assert "| 0_woman" in (tmp_path / "straight" / "report.md").read_text()  # Its class names.


@pytest.mark.parametrize("module, arg, message", [
    (query, "digits,via=onnx", r"via=, fold= and size= apply to gender_v1 only"),
    (query, "digits,fold=2", r"apply to gender_v1 only"),
    (query, "gender_v1,via=grpc", r"via='grpc': use onnx .* or http"),
    (own_model, "gender_v1,dataset=image_folder/25px_gray", r"for your own data use onnx"),
    (own_model, "onnx,fold=1", r"fold= and size= apply to gender_v1"),
])
def test_an_option_a_config_cannot_honour_is_an_error(module, arg, message):
  with pytest.raises(ValueError, match=message):
    module.get_config(arg)


def _differentiated_as_pytorch_did(directory) -> None:
  """dfm's executor on ``directory``'s torch_cnn.onnx gives the logits and the input
  gradient PyTorch computed (:mod:`torch_models`)."""
  config = _config(directory / "torch_cnn.onnx", num_classes=torch_models.NUM_CLASSES,
                   input_shape=torch_models.SHAPE, input={**PLAIN, "size": torch_models.SHAPE[:2]})
  apply_fn, params = models.load_frozen_classifier(config)
  reference = np.load(directory / "torch_cnn_reference.npz")
  images = jnp.asarray(reference["images"])
  np.testing.assert_allclose(apply_fn(params, images), reference["logits"], atol=1e-4)
  grad = jax.grad(lambda x: apply_fn(params, x)[:, torch_models.CLASS].sum())(images)
  np.testing.assert_allclose(grad, reference["grad"], atol=1e-4)


def test_a_pytorch_cnn_exported_to_onnx_is_differentiated_as_pytorch_did():
  """The export on record (written by PyTorch 2.13; make test does not install PyTorch)."""
  _differentiated_as_pytorch_did(torch_models.DATA)


def test_a_pytorch_cnn_exported_now_is_differentiated_as_pytorch_does(tmp_path):
  """The same with the installed PyTorch, exporting afresh."""
  pytest.importorskip("torch", reason="the bench extra: pip install -e '.[bench]'")
  torch_models.export_cnn(tmp_path)
  _differentiated_as_pytorch_did(tmp_path)


def test_compare_runs_dft_mft_and_dft_mft_on_the_one_foreign_model(face_folder, tmp_path):
  """No classifier to train: every method starts from the ONNX model's own weights (a
  linear model on the faces: gender-v1's graph runs end to end in the white-box test)."""
  path = tmp_path / "linear.onnx"
  linear_classifier(path, input_shape=(3, 25, 25), num_classes=2, outputs=("logits",))
  config = _gender_v1_on_folder(face_folder)
  with config.unlocked():
    config.model.update(path=str(path), input={**PLAIN, "size": (25, 25)}, output_kind="logits")
  before = run_evaluate.evaluate_frozen(config)["test"]["accuracy"]
  comparison = compare.run(config, str(tmp_path / "compare"), seeds=1)
  assert not (tmp_path / "compare" / "classifier").exists()
  rows = comparison["test_accuracy"]
  assert set(rows) == {"before", "dft", "mft", "dft_mft"} and rows["before"] == [before]
  mft = json.loads((tmp_path / "compare" / "mft" / "seed0" / "metrics.json").read_text())
  assert mft["before"]["accuracy"] == before and "psnr_db" not in mft["after"]
