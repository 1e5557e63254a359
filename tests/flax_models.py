"""Small Flax classifiers of a user's own, one Linen and one NNX, for config.model.kind=flax."""
import jax.numpy as jnp
from flax import linen, nnx


class LinenCnn(linen.Module):
  """A conv, batch norm (running averages when ``train`` is False) and a dense head."""

  num_classes: int = 3
  features: int = 4

  @linen.compact
  def __call__(self, images: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    x = linen.relu(linen.Conv(self.features, (3, 3))(images))
    x = linen.BatchNorm(use_running_average=not train)(x)
    return linen.Dense(self.num_classes)(x.mean(axis=(1, 2)))


class NnxCnn(nnx.Module):
  """A conv, dropout (off in eval mode) and a dense head."""

  def __init__(self, channels: int, num_classes: int, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(channels, 4, (3, 3), rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.head = nnx.Linear(4, num_classes, rngs=rngs)

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    x = self.dropout(nnx.relu(self.conv(images)))
    return self.head(x.mean(axis=(1, 2)))


class NnxSequential(nnx.Module):
  """Layers in an nnx.Sequential: their state is keyed by integers."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.layers = nnx.Sequential(nnx.Linear(36, 8, rngs=rngs), nnx.relu,
                                 nnx.Linear(8, 3, rngs=rngs))

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    return self.layers(images.reshape(len(images), -1))
