"""NumPy arrays as the splits dfm's pipeline reads, for notebooks: no dataset to prepare.

A split is any sequence of ``{"image", "label"}`` examples; :class:`ArraySplit`
is one over two arrays, checked as an ``npz`` file is (``image`` ``[N, H, W, C]``,
uint8 or float in [0, 1]; ``label`` ``[N]`` integers from 0), and it carries its
class names, as a prepared TFDS split does in its metadata.

Example::

  sources = array_splits({"train": (x_train, y_train), "validation": (x_val, y_val),
                          "test": (x_test, y_test)}, num_classes=10)
  len(sources["train"]), sources["test"][0]["label"]
"""
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dfm.data.npz import check_image, check_label
from dfm.data.pipeline import SPLITS


class ArraySplit(Sequence[dict]):
  """``images[i], labels[i]`` as example ``i``, with ``class_names``."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, *, class_names: list[str],
               name: str = "images"):
    self.images = check_image(np.asarray(images), name)
    self.labels = check_label(np.asarray(labels), name)
    if len(self.labels) != len(self.images):
      raise ValueError(f"{name}: {len(self.images)} images but {len(self.labels)} labels; "
                       "give one label per image.")
    if self.labels.max() >= len(class_names):
      raise ValueError(f"{name}: label {self.labels.max()} but {len(class_names)} classes; "
                       "labels are class numbers 0..num_classes-1.")
    self.class_names = list(class_names)

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict:
    return {"image": self.images[index], "label": int(self.labels[index])}


def _checked_pair(pair: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
  """``(images, labels)`` checked as an npz file's arrays; else a ValueError naming it."""
  if not isinstance(pair, (tuple, list)) or len(pair) != 2:
    raise ValueError(f"{name}: give a pair (images, labels), got {type(pair).__name__}.")
  labels = check_label(np.asarray(pair[1]), name)
  if not len(labels):
    raise ValueError(f"{name}: no examples; every split needs at least one.")
  return check_image(np.asarray(pair[0]), name), labels


def array_splits(arrays: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None
                 ) -> dict[str, ArraySplit]:
  """``{"train", "validation", "test"}`` of ``(images, labels)`` as :class:`ArraySplit`.

  ``class_names`` default to ``"0"``, ``"1"``, ...; ``num_classes`` to their number,
  else the largest label + 1.

  Raises:
    ValueError: a split missing, images of different shapes, bad arrays (named).
  """
  missing = [split for split in SPLITS if split not in arrays]
  if missing:
    raise ValueError(f"No {missing} arrays: give (images, labels) for each of {SPLITS}.")
  checked = {split: _checked_pair(arrays[split], f"{split} arrays") for split in SPLITS}
  if class_names is None:
    count = num_classes or 1 + max(int(labels.max()) for _, labels in checked.values())
    class_names = [str(label) for label in range(count)]
  elif num_classes is not None and num_classes != len(class_names):
    raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names.")
  sources = {split: ArraySplit(*checked[split], class_names=class_names, name=f"{split} arrays")
             for split in SPLITS}
  shapes = {split: source.images.shape[1:] for split, source in sources.items()}
  if len(set(shapes.values())) > 1:
    raise ValueError(f"The splits' images differ in shape: {shapes}.")
  return sources
