"""What a foreign model expects as input, declared in the config, in ``jax.numpy``.

dfm's images are ``[N, H, W, C]`` in [0, 1], gray (C = 1) or RGB (C = 3). A model
exported elsewhere wants its own tensor: another size, channel order and layout,
and its own pixel normalisation. ``config.black_box.input`` (or ``config.model.input``
for a model differentiated through) declares it::

  x = (pixel_max * resize(images, size)[..., order] - mean) * scale   # then layout

e.g. the dlib gender network: size (32, 32), RGB, NCHW, pixel_max 255, mean
(122.782, 117.001, 104.298), scale 1/256. Gray images are repeated to 3
channels when the model takes 3.

:meth:`InputSpec.apply` is differentiable, so white-box DFT through a foreign
model's graph and the black-box adapters (:meth:`InputSpec.prepare`, on host
arrays) share one implementation.

Example::

  spec = InputSpec.from_config(config.black_box.input)
  tensor = spec.prepare(images)   # float32 [N, 3, 32, 32] for NCHW
  jax.grad(lambda x: spec.apply(x).sum())(images)   # through the preparation
"""
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
# What a foreign model's output is; black boxes may also say "auto" (dfm.black_box.shapes).
OUTPUT_KINDS = ("probabilities", "logits")


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """A model's input tensor: ``size`` (H, W), ``channels`` (1 or 3), ``channel_order``,
  ``layout``, and the normalisation ``(pixel_max * x - mean) * scale``."""

  size: tuple[int, int]
  channels: int
  channel_order: str
  layout: str
  pixel_max: float
  mean: tuple[float, ...]
  scale: float
  # Where the config declares it, for error messages.
  config_field: str = dataclasses.field(default="config.black_box.input", compare=False)

  @classmethod
  def from_config(cls, section: Mapping[str, Any], *,
                  config_field: str = "config.black_box.input") -> "InputSpec":
    """Reads the config's input section (``config_field`` names it), checking every choice."""
    spec = cls(size=tuple(section["size"]), channels=int(section["channels"]),
               channel_order=section["channel_order"], layout=section["layout"],
               pixel_max=float(section["pixel_max"]), mean=tuple(section["mean"]),
               scale=float(section["scale"]), config_field=config_field)
    spec.check()
    return spec

  def check(self) -> None:
    """Raises a ValueError naming the config field that is wrong."""
    field = self.config_field
    if self.layout not in LAYOUTS:
      raise ValueError(f"{field}.layout={self.layout!r} is not one of {LAYOUTS}.")
    if self.channel_order not in CHANNEL_ORDERS:
      raise ValueError(f"{field}.channel_order={self.channel_order!r} is not one of "
                       f"{CHANNEL_ORDERS}.")
    if self.channels not in (1, 3):
      raise ValueError(f"{field}.channels must be 1 or 3, got {self.channels}.")
    if len(self.mean) not in (1, self.channels):
      raise ValueError(f"{field}.mean has {len(self.mean)} values; give 1 or "
                       f"{self.channels} (one per channel).")
    if len(self.size) != 2 or min(self.size) < 1:
      raise ValueError(f"{field}.size must be (height, width), got {self.size}.")

  @property
  def shape(self) -> tuple[int, int, int]:
    """One image's tensor shape in the model's layout."""
    height, width = self.size
    if self.layout == "NCHW":
      return (self.channels, height, width)
    return (height, width, self.channels)

  def apply(self, images: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` in [0, 1] -> the model's float32 input tensor, differentiably.

    Raises:
      ValueError: images whose channels cannot feed the model.
    """
    if images.shape[-1] not in (1, self.channels):
      raise ValueError(f"Images with {images.shape[-1]} channels cannot feed a model that "
                       f"takes {self.channels}; set {self.config_field}.channels.")
    images = jnp.asarray(images, jnp.float32)
    if images.shape[1:3] != self.size:
      images = jax.image.resize(images, (images.shape[0], *self.size, images.shape[-1]),
                                "bilinear")
    if images.shape[-1] != self.channels:
      images = jnp.repeat(images, self.channels, axis=-1)
    if self.channel_order == "BGR":
      images = images[..., ::-1]
    mean = jnp.asarray(self.mean, jnp.float32)
    tensor = (jnp.float32(self.pixel_max) * images - mean) * jnp.float32(self.scale)
    return tensor.transpose(0, 3, 1, 2) if self.layout == "NCHW" else tensor

  def prepare(self, images: np.ndarray) -> np.ndarray:
    """:meth:`apply` on host arrays, for a model run outside JAX (onnxruntime, HTTP)."""
    return np.ascontiguousarray(_apply_jit(self, np.asarray(images, np.float32)), np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _apply_jit(spec: InputSpec, images: jax.Array) -> jax.Array:
  return spec.apply(images)
