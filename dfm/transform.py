"""Perturbation transforms: how one learned noise N is applied to every image X.

All transforms map images in [0, 1] to perturbed images Z in [0, 1]. The noise is
any pytree of arrays shaped ``(h, w, C)`` with ``h <= H`` and ``w <= W``: each
leaf is resized (bilinear) to the image's ``(H, W, C)`` and the leaves are summed,
so one array shaped like an image, a coarser one (fewer numbers to learn, a
smoother perturbation) and a multi-scale ``{"coarse": (7, 7, 1), "fine":
(28, 28, 1)}`` all work alike.

A transform is a name of :data:`TRANSFORMS` or any function
``transform(images, noise_image) -> perturbed``; :func:`get_transform` resolves a
name once, outside any traced function.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dfm.types import PyTree

Transform = Callable[[jax.Array, jax.Array], jax.Array]

# 2X - 1 is clipped to +-(1 - _ATANH_MARGIN) so that atanh stays finite in float32.
_ATANH_MARGIN = 1e-6


def tanh_transform(images: jax.Array, noise: jax.Array) -> jax.Array:
  """``Z = 0.5 * (tanh(atanh(2X - 1) + N) + 1)``: the paper's Eq. 5 in its exact form
  (a Carlini-Wagner change of variables); ``Z = X`` at ``N = 0``, ``Z`` in [0, 1]."""
  centred = jnp.clip(2.0 * images - 1.0, -1.0 + _ATANH_MARGIN, 1.0 - _ATANH_MARGIN)
  return 0.5 * (jnp.tanh(jnp.arctanh(centred) + noise) + 1.0)


def paper_literal_transform(images: jax.Array, noise: jax.Array) -> jax.Array:
  """``Z = 0.5 * (tanh(X + N) + 1)``: Eq. 5 as printed. With X in [0, 1] this changes
  every image even at ``N = 0``; kept for faithful reproduction of the paper."""
  return 0.5 * (jnp.tanh(images + noise) + 1.0)


def additive_clip_transform(images: jax.Array, noise: jax.Array) -> jax.Array:
  """``Z = clip(X + N, 0, 1)``."""
  return jnp.clip(images + noise, 0.0, 1.0)


TRANSFORMS: dict[str, Transform] = {
    "tanh": tanh_transform,
    "paper_literal": paper_literal_transform,
    "additive_clip": additive_clip_transform,
}


def get_transform(transform: str | Transform) -> Transform:
  """The transform function for a name of :data:`TRANSFORMS`, or ``transform`` itself.

  Raises:
    ValueError: an unknown name.
  """
  if callable(transform):
    return transform
  if transform not in TRANSFORMS:
    raise ValueError(f"Unknown transform {transform!r}; choose one of {tuple(TRANSFORMS)}.")
  return TRANSFORMS[transform]


def _resize_leaf(noise: jax.Array, image_shape: tuple[int, ...]) -> jax.Array:
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


def resize_noise(noise: PyTree, image_shape: tuple[int, ...]) -> jax.Array:
  """The noise as one image-shaped array: every leaf resized to ``image_shape``, summed.

  A leaf of the image's shape is used as is; a coarser ``(h, w, C)`` one is
  resized up with bilinear interpolation.

  Example::

    resize_noise(jnp.zeros((7, 7, 1)), (28, 28, 1)).shape  # (28, 28, 1)
    resize_noise({"coarse": jnp.ones((7, 7, 1)), "fine": jnp.ones((28, 28, 1))},
                 (28, 28, 1))                              # 2.0 everywhere

  Raises:
    ValueError: a leaf that cannot be resized to the image (rank, channels, or
      larger than the image), or a noise without leaves.
  """
  image_shape = tuple(image_shape)
  leaves = jax.tree.leaves(noise)
  if not leaves:
    raise ValueError("The noise pytree has no arrays: give at least one (h, w, C) array.")
  resized = [_resize_leaf(leaf, image_shape) for leaf in leaves]
  return resized[0] if len(resized) == 1 else sum(resized[1:], resized[0])


def perturb(images: jax.Array, noise: PyTree, *, transform: str | Transform = "tanh") -> jax.Array:
  """Applies one universal noise to a batch of images, keeping pixels in [0, 1].

  ``Z = transform(X, resize_noise(N))``, the noise broadcast over the batch. The
  transforms of :data:`TRANSFORMS`:

  - ``tanh`` (default): ``Z = 0.5 * (tanh(atanh(2X - 1) + N) + 1)``, exact Eq. 5;
  - ``paper_literal``: ``Z = 0.5 * (tanh(X + N) + 1)``, Eq. 5 as printed;
  - ``additive_clip``: ``Z = clip(X + N, 0, 1)``.

  ``transform`` is resolved while tracing, so ``jax.jit(perturb)`` compiles the
  default; pass another with ``functools.partial(perturb, transform=...)``.

  Example::

    x = jnp.full((2, 28, 28, 1), 0.5)
    z = perturb(x, jnp.zeros((28, 28, 1)))   # tanh: z == x
    z = perturb(x, jnp.ones((7, 7, 1)))      # coarse noise, resized up
    z = jax.jit(perturb)(x, {"coarse": jnp.ones((7, 7, 1)), "fine": jnp.zeros((28, 28, 1))})

  Args:
    images: ``[B, H, W, C]`` pixels in [0, 1].
    noise: a pytree of ``(h, w, C)`` arrays; see :func:`resize_noise`.
    transform: a name of :data:`TRANSFORMS` or a function ``(images, noise_image)``.

  Returns:
    The perturbed images, same shape and dtype as ``images``.
  """
  noise_image = resize_noise(noise, images.shape[1:]).astype(images.dtype)
  return get_transform(transform)(images, noise_image)
