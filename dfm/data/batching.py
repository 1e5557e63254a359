"""Turns the images and labels of some examples into one padded, validated batch.

A batch is `{"image": float32 [B, H, W, C] in [0, 1], "label": int32 [B],
"mask": float32 [B]}`: rows past the real examples are zeros with mask 0, so every
batch has the same shape and a jitted step compiles once (:class:`dfm.types.Batch`,
here as host arrays).
"""

import numpy as np

from dfm.types import Batch


def images_to_unit_range(images: np.ndarray) -> np.ndarray:
  """Returns images as float32 in [0, 1]: uint8 is divided by 255, floats kept.

  Raises ValueError for other dtypes (their scale is ambiguous) and for float
  pixels outside [0, 1] or NaN.

  >>> images_to_unit_range(np.array([0, 255], np.uint8))
  array([0., 1.], dtype=float32)
  """
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(
        f"Images must be uint8 (0..255) or float (0..1), got dtype {images.dtype}."
    )
  images = images.astype(np.float32)
  in_range = (images >= 0.0) & (images <= 1.0)
  if not in_range.all():
    bad = images[~in_range]
    raise ValueError(
        f"{bad.size} pixel values outside [0, 1] (e.g. {bad[0]}); float images must"
        " already be scaled to [0, 1]."
    )
  return images


def checked_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Returns labels as int32, raising ValueError if any is outside [0, num_classes).

  >>> checked_labels(np.array([0, 9]), 10)
  array([0, 9], dtype=int32)
  """
  outside = (labels < 0) | (labels >= num_classes)
  if outside.any():
    raise ValueError(
        f"Labels {sorted(set(labels[outside].tolist()))} are outside"
        f" [0, {num_classes}): the dataset declares {num_classes} classes."
    )
  return labels.astype(np.int32)


def to_batch(
    images: np.ndarray, labels: np.ndarray, *, batch_size: int, num_classes: int
) -> Batch:
  """Converts, validates and zero-pads `images` [n, H, W, C] and `labels` [n] to `batch_size`.

  >>> b = to_batch(np.zeros((1, 2, 2, 1), np.uint8), np.array([3]), batch_size=2, num_classes=10)
  >>> b["image"].shape, b["label"].tolist(), b["mask"].tolist()
  ((2, 2, 2, 1), [3, 0], [1.0, 0.0])
  """
  num_real = len(images)
  if not 0 < num_real <= batch_size or len(labels) != num_real:
    raise ValueError(
        f"Got {num_real} images and {len(labels)} labels for a batch of {batch_size}."
    )
  padding = batch_size - num_real
  images = images_to_unit_range(images)
  return {
      "image": np.pad(images, [(0, padding)] + [(0, 0)] * (images.ndim - 1)),
      "label": np.pad(checked_labels(labels, num_classes), (0, padding)),
      "mask": np.pad(np.ones(num_real, np.float32), (0, padding)),
  }
