"""The VGG classifier: pooling, parameter counts, presets, the apply_fn boundary."""
import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from dfm import models


def test_max_pool_2x2_matches_flax_max_pool_values_and_gradients():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 6, 3)), jnp.float32)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(models.max_pool_2x2(x), flax_pool(x))
  np.testing.assert_array_equal(jax.grad(lambda x: models.max_pool_2x2(x).sum())(x),
                                jax.grad(lambda x: flax_pool(x).sum())(x))


@pytest.mark.parametrize("preset, shape, count", [
    # convs 3*3*1*4+4, 3*3*4*8+8; dense 7*7*8 -> 16 -> 16 -> 10.
    ("tiny", (28, 28, 1), 40 + 296 + 392 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10),
    # convs 8, 8, 16, 16, 32, 32 wide (18,040); dense 3*3*32 -> 512 -> 512 -> 10.
    ("vgg6", (28, 28, 1), 18_040 + 288 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10),
    # VGG-16's 13 convs (14,714,688); dense 7*7*512 -> 512 -> 512 -> 2.
    ("vgg16", (224, 224, 3), 14_714_688 + 25_088 * 512 + 512 + 512 * 512 + 512 + 512 * 2 + 2),
])
def test_parameter_count_of_each_preset(preset, shape, count):
  num_classes = 2 if preset == "vgg16" else 10
  config = common.model_config(preset, num_classes=num_classes, input_shape=shape)
  shapes = models.param_shapes(models.build_classifier(config), shape)
  assert models.count_params(shapes) == count


class PlainVGG(nn.Module):
  """The textbook formulation: nn.Conv everywhere, ReLU then pool."""

  blocks: tuple
  dense: tuple
  num_classes: int

  @nn.compact
  def __call__(self, x):
    for widths in self.blocks:
      for width in widths:
        x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    for width in self.dense:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)


# 1 and 3 channels: the first convolution is dfm's FewChannelConv3x3; 8: nn.Conv.
@pytest.mark.parametrize("channels", [1, 3, 8])
def test_vgg_computes_the_plain_vgg_with_the_same_parameters(channels):
  blocks, dense = ((4, 6), (8,)), (16,)
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.uniform(size=(2, 12, 12, channels)), jnp.float32)
  vgg, plain = models.VGG(blocks, dense, 5), PlainVGG(blocks, dense, 5)
  shapes = models.param_shapes(vgg, (12, 12, channels))
  assert shapes == jax.eval_shape(plain.init, jax.random.key(0), images)["params"]
  # Random values for every parameter, biases included (an initialiser's are zero), at
  # LeCun's scale. The functions are jitted: eagerly, each of their hundreds of ops would
  # compile on its own.
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(
      scale=np.prod(s.shape[:-1]) ** -0.5 if len(s.shape) > 1 else 0.1, size=s.shape), s.dtype),
                        shapes)
  # Each model's logits and the gradients of their sum with respect to the images (DFT's)
  # and to the parameters (MFT's), in one program.
  logits_and_gradients = lambda model: jax.jit(lambda p, x: (
      model.apply({"params": p}, x),
      jax.grad(lambda p, x: model.apply({"params": p}, x).sum(), argnums=(0, 1))(p, x)))
  fast, fast_gradients = logits_and_gradients(vgg)(params, images)
  slow, slow_gradients = logits_and_gradients(plain)(params, images)
  np.testing.assert_allclose(fast, slow, atol=1e-5)
  np.testing.assert_allclose(jax.flatten_util.ravel_pytree(fast_gradients)[0],
                             jax.flatten_util.ravel_pytree(slow_gradients)[0], atol=1e-5)


def test_apply_fn_is_pure_and_gives_logits():
  config = common.model_config("tiny", num_classes=10, input_shape=(28, 28, 1))
  module = models.build_classifier(config)
  params = models.init_params(module, (28, 28, 1), seed=0)
  apply_fn = models.make_apply_fn(module)
  images = jnp.full((3, 28, 28, 1), 0.5)
  logits = jax.jit(apply_fn)(params, images)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, apply_fn(params, images))


def test_initialisation_compiled_to_run_once_gives_the_bits_of_the_default_compile():
  """``init_params`` compiles with LLVM at -O1 on CPU (``dfm.xla``): the values of XLA's
  default -O3."""
  module = models.VGG(blocks=((2,),), dense=(3,), num_classes=2)
  shape = (6, 6, 1)
  default = jax.jit(module.init, compiler_options={"xla_backend_optimization_level": "3"})(
      jax.random.key(5), jnp.zeros((1, *shape)))["params"]
  same = jax.tree.map(np.array_equal, models.init_params(module, shape, 5), default)
  assert all(jax.tree.leaves(same))
