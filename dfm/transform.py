"""Perturbation transforms: how one learned noise N is applied to every image X.

All transforms map images in [0, 1] to perturbed images Z in [0, 1]. The noise is
one array shaped like a single image, ``(H, W, C)``, or a lower-resolution
``(h, w, C)`` array that is resized up to ``(H, W)`` (bilinear) before use; fewer
numbers to learn, and a smoother perturbation.
"""
from typing import Literal

import jax
import jax.numpy as jnp

TransformKind = Literal["tanh", "paper_literal", "additive_clip"]
TRANSFORM_KINDS: tuple[str, ...] = ("tanh", "paper_literal", "additive_clip")

# 2X - 1 is clipped to +-(1 - _ATANH_MARGIN) so that atanh stays finite in float32.
_ATANH_MARGIN = 1e-6


def resize_noise(noise: jax.Array, image_shape: tuple[int, ...]) -> jax.Array:
  """Returns ``noise`` at the size of one image, resizing a coarser noise up.

  A noise of shape ``(h, w, C)`` with ``h <= H`` and ``w <= W`` is resized to the
  image's ``(H, W, C)`` with bilinear interpolation; a noise already of the
  image's shape is returned as is.

  Example::

    noise = jnp.zeros((7, 7, 1))
    resize_noise(noise, (28, 28, 1)).shape  # (28, 28, 1)

  Raises:
    ValueError: if the noise cannot be resized to the image (rank, channels, or
      a noise larger than the image).
  """
  image_shape = tuple(image_shape)
  if noise.shape == image_shape:
    return noise
  fits = (
      noise.ndim == len(image_shape) == 3
      and noise.shape[-1] == image_shape[-1]
      and noise.shape[0] <= image_shape[0]
      and noise.shape[1] <= image_shape[1]
  )
  if not fits:
    raise ValueError(
        f"Noise of shape {noise.shape} does not fit images of shape {image_shape}: "
        "the noise must be (H, W, C) like one image, or a coarser (h, w, C) with "
        "h <= H, w <= W and the same channels. Set config.dft.noise_shape to match "
        "the dataset, or start from a fresh workdir."
    )
  return jax.image.resize(noise, image_shape, method="bilinear")


def perturb(
    images: jax.Array, noise: jax.Array, *, kind: TransformKind = "tanh"
) -> jax.Array:
  """Applies one universal noise to a batch of images, keeping pixels in [0, 1].

  With ``X`` the images and ``N`` the noise (broadcast over the batch):

  - ``tanh`` (default): ``Z = 0.5 * (tanh(atanh(2X - 1) + N) + 1)``, the exact form
    of the paper's Eq. 5 (a Carlini-Wagner change of variables): ``Z = X`` at
    ``N = 0`` and ``Z`` stays in [0, 1] for any ``N``.
  - ``paper_literal``: ``Z = 0.5 * (tanh(X + N) + 1)``, Eq. 5 as printed. With X in
    [0, 1] this changes every image even at ``N = 0``; kept for faithful
    reproduction of the paper.
  - ``additive_clip``: ``Z = clip(X + N, 0, 1)``.

  Example::

    x = jnp.full((2, 28, 28, 1), 0.5)
    z = perturb(x, jnp.zeros((28, 28, 1)))   # tanh: z == x
    z = perturb(x, jnp.ones((7, 7, 1)))      # coarse noise, resized up

  Args:
    images: ``[B, H, W, C]`` pixels in [0, 1].
    noise: ``(H, W, C)`` or a coarser ``(h, w, C)``; see :func:`resize_noise`.
    kind: one of ``TRANSFORM_KINDS``.

  Returns:
    The perturbed images, same shape and dtype as ``images``.
  """
  noise = resize_noise(noise, images.shape[1:]).astype(images.dtype)
  if kind == "tanh":
    centred = jnp.clip(2.0 * images - 1.0, -1.0 + _ATANH_MARGIN, 1.0 - _ATANH_MARGIN)
    return 0.5 * (jnp.tanh(jnp.arctanh(centred) + noise) + 1.0)
  if kind == "paper_literal":
    return 0.5 * (jnp.tanh(images + noise) + 1.0)
  if kind == "additive_clip":
    return jnp.clip(images + noise, 0.0, 1.0)
  raise ValueError(f"Unknown transform kind {kind!r}; choose one of {TRANSFORM_KINDS}.")
