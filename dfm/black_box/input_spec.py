"""What a foreign model expects as input, declared in the config, applied on the host.

dfm's images are ``[N, H, W, C]`` in [0, 1], gray (C = 1) or RGB (C = 3). A model
exported elsewhere wants its own tensor: another size, channel order and layout,
and its own pixel normalisation. ``config.black_box.input`` declares it::

  x = (pixel_max * resize(images, size)[..., order] - mean) * scale   # then layout

e.g. the dlib gender network: size (32, 32), RGB, NCHW, pixel_max 255, mean
(122.782, 117.001, 104.298), scale 1/256. Gray images are repeated to 3
channels when the model takes 3.

Example::

  spec = InputSpec.from_config(config.black_box.input)
  tensor = spec.prepare(images)   # float32 [N, 3, 32, 32] for NCHW
"""
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")


@functools.partial(jax.jit, static_argnames="size")
def _resize(images: jax.Array, size: tuple[int, int]) -> jax.Array:
  return jax.image.resize(images, (images.shape[0], *size, images.shape[-1]), "bilinear")


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

  @classmethod
  def from_config(cls, section: Mapping[str, Any]) -> "InputSpec":
    """Reads ``config.black_box.input``, checking every choice."""
    spec = cls(size=tuple(section["size"]), channels=int(section["channels"]),
               channel_order=section["channel_order"], layout=section["layout"],
               pixel_max=float(section["pixel_max"]), mean=tuple(section["mean"]),
               scale=float(section["scale"]))
    spec.check()
    return spec

  def check(self) -> None:
    """Raises a ValueError naming the ``config.black_box.input`` field that is wrong."""
    if self.layout not in LAYOUTS:
      raise ValueError(f"config.black_box.input.layout={self.layout!r} is not one of {LAYOUTS}.")
    if self.channel_order not in CHANNEL_ORDERS:
      raise ValueError(f"config.black_box.input.channel_order={self.channel_order!r} is not "
                       f"one of {CHANNEL_ORDERS}.")
    if self.channels not in (1, 3):
      raise ValueError(f"config.black_box.input.channels must be 1 or 3, got {self.channels}.")
    if len(self.mean) not in (1, self.channels):
      raise ValueError(f"config.black_box.input.mean has {len(self.mean)} values; give 1 or "
                       f"{self.channels} (one per channel).")
    if len(self.size) != 2 or min(self.size) < 1:
      raise ValueError(f"config.black_box.input.size must be (height, width), got {self.size}.")

  @property
  def shape(self) -> tuple[int, int, int]:
    """One image's tensor shape in the model's layout."""
    height, width = self.size
    if self.layout == "NCHW":
      return (self.channels, height, width)
    return (height, width, self.channels)

  def prepare(self, images: np.ndarray) -> np.ndarray:
    """``[N, H, W, C]`` in [0, 1] -> the model's float32 input tensor."""
    images = np.asarray(images, np.float32)
    if images.shape[-1] not in (1, self.channels):
      raise ValueError(f"Images with {images.shape[-1]} channels cannot feed a model that "
                       f"takes {self.channels}; set config.black_box.input.channels.")
    if images.shape[1:3] != self.size:
      images = np.asarray(_resize(images, self.size))
    if images.shape[-1] != self.channels:
      images = np.repeat(images, self.channels, axis=-1)
    if self.channel_order == "BGR":
      images = images[..., ::-1]
    mean = np.asarray(self.mean, np.float32)
    tensor = (np.float32(self.pixel_max) * images - mean) * np.float32(self.scale)
    if self.layout == "NCHW":
      tensor = tensor.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(tensor, np.float32)
