"""A VGG-style image classifier in Flax (Linen): conv blocks, then the "NNET" head.

``blocks`` lists the 3x3 convolution widths of each block; every block ends in a
2x2 max-pool. The paper's "NNET" is two dense layers of 512 after the features.

Two choices make the frozen model's forward and input-gradient faster on CPU,
with the same function and the same parameter tree as the plain formulation
(``Conv_i`` / ``Dense_i``; kernels ``(3, 3, C_in, C_out)``):
- a first convolution over few input channels (gray, RGB) is nine shifted
  matrix products (:class:`FewChannelConv3x3`), ~2x faster there than ``lax.conv``;
- each block pools before its last ReLU: ``max`` and ``relu`` commute, and the
  ReLU then works on a quarter of the values.
"""
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2 (odd trailing rows/columns dropped, as VALID).

  Written as a reshape and a max rather than ``nn.max_pool``: the same values, but
  its gradient is a cheap elementwise select instead of XLA's ``select_and_scatter``
  (measured ~25% faster for the DFT step on CPU).
  """
  batch, height, width, channels = x.shape
  x = x[:, : height // 2 * 2, : width // 2 * 2]
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


class FewChannelConv3x3(nn.Module):
  """A 3x3 SAME convolution as ``sum_ij shift_ij(x) @ kernel[i, j]``, for small C_in.

  The same parameters (``kernel`` ``(3, 3, C_in, features)``, ``bias``) and values
  as ``nn.Conv(features, (3, 3))``.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = bias
    for i in range(3):
      for j in range(3):
        out = out + padded[:, i:i + height, j:j + width, :] @ kernel[i, j]
    return out


# Up to this many input channels, the first convolution is a FewChannelConv3x3.
FEW_CHANNELS = 4


class VGG(nn.Module):
  """VGG-style classifier: ``[conv3x3 + relu] * n, max-pool`` per block, dense head.

  Attributes:
    blocks: convolution widths per block, e.g. ``((32, 32), (64, 64))``.
    dense: widths of the hidden dense layers (the paper's NNET: ``(512, 512)``).
    num_classes: number of output logits.
  """

  blocks: Sequence[Sequence[int]]
  dense: Sequence[int] = (512, 512)
  num_classes: int = 10

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x, index = images, 0
    for widths in self.blocks:
      for position, width in enumerate(widths):
        name = f"Conv_{index}"
        if index == 0 and x.shape[-1] <= FEW_CHANNELS:
          x = FewChannelConv3x3(width, name=name)(x)
        else:
          x = nn.Conv(width, (3, 3), name=name)(x)
        index += 1
        if position < len(widths) - 1:
          x = nn.relu(x)
      x = nn.relu(max_pool_2x2(x))  # == max_pool_2x2(relu(x)), on 1/4 of the values.
    x = x.reshape(x.shape[0], -1)
    for width in self.dense:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x).astype(jnp.float32)
