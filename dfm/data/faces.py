"""What every face builder shares: the stored size in the config, resizing, k-fold splits.

A face builder stores its crops as uint8 `[size, size, channels]` tensors at one of
`IMAGE_SIZES`, the classifier's input size, named in the TFDS config: prepare
`lfw_subset/32px_fold0` for 32x32 crops. The pipeline scales pixels to [0, 1].

>>> resize_face(np.full((25, 25), 0.5), 32).shape
(32, 32, 1)
"""

import concurrent.futures
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

IMAGE_SIZES = (25, 32, 64, 112, 224)  # Side in pixels; 25 is lfw_subset's own size.


@dataclasses.dataclass(eq=False, kw_only=True)
class FaceConfig(tfds.core.BuilderConfig):
  """A face builder's config: crops stored as `size` x `size` uint8."""

  size: int = IMAGE_SIZES[0]


def resize_face(image: np.ndarray, size: int) -> np.ndarray:
  """Returns a gray image in [0, 1] (float, `[H, W]`) as uint8 `[size, size, 1]`.

  Pixels are scaled to 0..255 and rounded, then resized with Pillow bicubic (a no-op
  when the image already has that size).

  >>> resize_face(np.ones((25, 25)), 25).max()
  np.uint8(255)
  """
  pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
  if pixels.shape != (size, size):
    pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC))
  return pixels[..., None]


def crop_resize_rgb(
    image: Image.Image, box: tuple[int, int, int, int], size: int
) -> np.ndarray:
  """Returns `box` (left, top, right, bottom) of `image` in RGB as uint8 `[size, size, 3]`.

  Resized with Pillow bicubic (a no-op when the box is already `size` x `size`).

  >>> crop_resize_rgb(Image.new("L", (50, 40)), (5, 0, 45, 40), 32).shape
  (32, 32, 3)
  """
  face = image.convert("RGB").crop(box)
  if face.size != (size, size):
    face = face.resize((size, size), Image.BICUBIC)
  return np.asarray(face, dtype=np.uint8)


def crop_square_rgb(image: Image.Image, size: int) -> np.ndarray:
  """Returns the centred square of a photo, in RGB, resized to uint8 `[size, size, 3]`.

  The square's side is the photo's shorter side (for a 178x218 aligned CelebA face,
  rows 20..197); it is resized with Pillow bicubic (a no-op when already `size`).

  >>> crop_square_rgb(Image.new("L", (178, 218)), 64).shape
  (64, 64, 3)
  """
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  return crop_resize_rgb(image, (left, top, left + side, top + side), size)


# Why a face builder skipped an example: the keys of the summary's `skipped`.
SKIP_ABSENT = "image listed but absent"
SKIP_CORRUPT = "corrupt image"
SKIP_NO_FACE = "no face found"


def skipped_metadata() -> tfds.core.MetadataDict:
  """Returns the builder metadata that counts skipped examples: `{"skipped": {reason: n}}`.

  A builder that drops an example (a missing or corrupt image, no face found) adds
  one to `self.info.metadata["skipped"][reason]`; TFDS saves it with the dataset and
  `summarize` reports it.
  """
  return tfds.core.MetadataDict(skipped={})


def count_skipped(metadata: tfds.core.MetadataDict, reason: str) -> None:
  """Adds one example skipped for `reason` to the counts of `skipped_metadata`."""
  metadata["skipped"][reason] = metadata["skipped"].get(reason, 0) + 1


def image_feature(size: int, channels: int) -> tfds.features.Tensor:
  """The `image` feature of a face builder: uint8 `[size, size, channels]`, raw bytes.

  Raw bytes let the pipeline decode a whole batch with one `np.frombuffer`.
  """
  return tfds.features.Tensor(
      shape=(size, size, channels), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
  )


Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
CHUNK_SIZE = 256  # Images decoded at a time: memory stays flat in the dataset's size.


def load_in_chunks(
    items: Iterable[Item], load: Callable[[Item], Loaded], *, chunk_size: int = CHUNK_SIZE
) -> Iterator[tuple[Item, Loaded]]:
  """Yields `(item, load(item))` in order, loading `chunk_size` items at a time on all cores.

  Threads suffice: Pillow releases the GIL while it decodes and resizes.

  >>> list(load_in_chunks([1, 2, 3], lambda x: x * x, chunk_size=2))
  [(1, 1), (2, 4), (3, 9)]
  """
  items = iter(items)
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    while chunk := list(itertools.islice(items, chunk_size)):
      yield from zip(chunk, pool.map(load, chunk))
