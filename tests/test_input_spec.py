"""A foreign model's input convention: one differentiable implementation for both paths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dfm.models.input_spec import InputSpec

DLIB = {"size": (4, 4), "channels": 3, "channel_order": "BGR", "layout": "NCHW",
        "pixel_max": 255.0, "mean": (122.782, 117.001, 104.298), "scale": 1 / 256}


def _reference(images: np.ndarray, section: dict) -> np.ndarray:
  """The convention written out in NumPy for images already at the model's size."""
  if images.shape[-1] == 1 and section["channels"] == 3:
    images = np.concatenate([images] * 3, axis=-1)
  if section["channel_order"] == "BGR":
    images = images[..., ::-1]
  tensor = (section["pixel_max"] * images - np.asarray(section["mean"])) * section["scale"]
  return tensor.transpose(0, 3, 1, 2) if section["layout"] == "NCHW" else tensor


@pytest.mark.parametrize("channels_in", [1, 3])
def test_apply_and_prepare_match_the_convention(channels_in):
  images = np.random.default_rng(0).uniform(size=(2, 4, 4, channels_in)).astype(np.float32)
  spec = InputSpec.from_config(DLIB)
  expected = _reference(images, DLIB)
  np.testing.assert_allclose(np.asarray(spec.apply(jnp.asarray(images))), expected, atol=1e-5)
  np.testing.assert_allclose(spec.prepare(images), expected, atol=1e-5)
  assert spec.prepare(images).shape == (2, *spec.shape)


def test_apply_is_differentiable():
  """A gray pixel feeds three channels: d sum(tensor) / dx = 3 * pixel_max * scale."""
  spec = InputSpec.from_config(DLIB)
  grad = jax.grad(lambda x: spec.apply(x).sum())(jnp.full((1, 4, 4, 1), 0.5))
  np.testing.assert_allclose(grad, 3 * 255.0 / 256, rtol=1e-6)
  resized = InputSpec.from_config({**DLIB, "size": (8, 8)})
  grad = jax.grad(lambda x: resized.apply(x).sum())(jnp.full((1, 4, 4, 3), 0.5))
  assert np.all(np.isfinite(grad)) and np.all(grad > 0)


def test_errors_name_the_config_field_the_spec_came_from():
  with pytest.raises(ValueError, match=r"config\.model\.input\.layout='CHW'"):
    InputSpec.from_config({**DLIB, "layout": "CHW"}, config_field="config.model.input")
  spec = InputSpec.from_config({**DLIB, "channels": 1, "mean": (0.5,)},
                               config_field="config.model.input")
  with pytest.raises(ValueError, match=r"set config\.model\.input\.channels"):
    spec.apply(jnp.zeros((1, 4, 4, 3)))
