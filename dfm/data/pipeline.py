"""The grain input pipeline: prepared splits in, fixed-shape masked batches out.

Batches are elements of a grain `MapDataset` indexed by global step: step k reads
batch `k % steps_per_epoch` of epoch `k // steps_per_epoch`, whose order is a fresh
permutation seeded by `(seed, epoch)`. So a batch never spans two epochs, the last
batch of an epoch is padded (mask 0), and the iterator's whole position is the step
index: `get_state()` / `set_state()` resume exactly, and grain's orbax handler can
checkpoint it. Batches are built ahead in background threads.

>>> source = open_split("mnist5k", "train", "data")  # doctest: +SKIP
>>> batches = make_train_loader(source, batch_size=800, seed=0, num_epochs=5)  # doctest: +SKIP
>>> next(batches)["image"].shape  # doctest: +SKIP
(800, 28, 28, 1)
"""

import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from dfm.data import batching
from dfm.data import preparation
from dfm.data import reading

SPLITS = ("train", "validation", "test")

_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def open_split(name: str, split: str, data_dir: str) -> Sequence[dict]:
  """Returns the random-access TFDS data source of a prepared split; never downloads.

  Raises FileNotFoundError (with the command that prepares it) if the dataset is not
  prepared, ValueError for an unknown dataset or split, or an empty split. `split`
  may use TFDS slicing, e.g. "train[:800]". Works under `tfds.testing.mock_data`.

  >>> len(open_split("uci_digits", "validation", "data"))  # doctest: +SKIP
  360
  """
  builder = preparation.get_builder(name, data_dir)
  try:
    source = builder.as_data_source(split=split)
  except (KeyError, ValueError, FileNotFoundError) as error:
    raise _explain_open_error(builder, name, split, data_dir) from error
  if not len(source):
    raise ValueError(f"Split {split!r} of {name!r} in {data_dir} has no examples.")
  return source


def _explain_open_error(
    builder: tfds.core.DatasetBuilder, name: str, split: str, data_dir: str
) -> Exception:
  """Returns an error that names why `split` of dataset `name` could not be opened, and the fix."""
  if not builder.is_prepared():
    return FileNotFoundError(
        f"Dataset {name!r} is not prepared in {os.path.abspath(data_dir)}. Run:"
        f" python -m experiments.prepare --dataset={name} --data_dir={data_dir}"
    )
  known_splits = sorted(builder.info.splits)
  if split.split("[")[0] not in known_splits:
    return ValueError(f"Unknown split {split!r} of {name!r}; valid splits: {known_splits}.")
  if not builder.info.splits[split].num_examples:
    return ValueError(f"Split {split!r} of {name!r} in {data_dir} has no examples.")
  return RuntimeError(f"Could not open split {split!r} of {name!r} in {data_dir}.")


def num_classes_of(source: Sequence[dict]) -> int:
  """Returns the number of classes a source declares for its "label"."""
  if hasattr(source, "dataset_info") and not hasattr(source, "class_names"):
    return source.dataset_info.features["label"].num_classes
  return len(class_names_of(source))


def class_names_of(source: Sequence[dict]) -> list[str]:
  """The names a source gives its "label" classes, e.g. ``["no", "yes"]``: a TFDS
  source's metadata, or the ``class_names`` of a :class:`dfm.data.arrays.ArraySplit`."""
  if hasattr(source, "class_names"):
    return list(source.class_names)
  if not hasattr(source, "dataset_info"):
    raise ValueError("The source declares no classes (no TFDS metadata, no class_names): "
                     "pass num_classes explicitly, or use dfm.data.array_splits for arrays.")
  return list(source.dataset_info.features["label"].names)


def num_batches(num_examples: int, batch_size: int) -> int:
  """Returns the batches per epoch, the last one padded: ceil(num_examples / batch_size).

  >>> num_batches(1078, 800)
  2
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  return -(-num_examples // batch_size)


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """Returns the example order of one epoch, determined by (seed, epoch)."""
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def _batch_loader(
    source: Sequence[dict],
    num_steps: int,
    indices_of_step: Callable[[int], np.ndarray],
    *,
    batch_size: int,
    num_classes: int | None,
) -> grain.DatasetIterator:
  """Returns a prefetching, checkpointable iterator over `num_steps` batches; a step
  with no indices (a shard past the last example) is all padding."""
  if not len(source):
    raise ValueError("The source has no examples.")
  if num_classes is None:
    num_classes = num_classes_of(source)
  read = reading.make_reader(source)

  def batch_of_step(step: int) -> batching.Batch:
    indices = indices_of_step(step).tolist()
    images, labels = read(indices or [0])
    batch = batching.to_batch(images, labels, batch_size=batch_size, num_classes=num_classes)
    return batch if indices else {name: np.zeros_like(rows) for name, rows in batch.items()}

  steps = grain.MapDataset.range(num_steps)
  return iter(steps.map(batch_of_step).to_iter_dataset(_READ_OPTIONS))


def _shard_rows(batch_size: int, shard: grain.sharding.ShardOptions) -> slice:
  """The rows of a global batch that ``shard`` reads: ``[i * B / n, (i + 1) * B / n)``.

  >>> _shard_rows(8, grain.sharding.ShardOptions(shard_index=1, shard_count=2))
  slice(4, 8, None)
  """
  count = shard.shard_count
  if batch_size % count:
    raise ValueError(
        f"A batch of {batch_size} examples does not split evenly over {count} processes: "
        f"set the batch size (config.dft.batch_size) to a multiple of {count}.")
  rows = batch_size // count
  return slice(shard.shard_index * rows, (shard.shard_index + 1) * rows)


def make_train_loader(
    source: Sequence[dict],
    *,
    batch_size: int,
    seed: int,
    num_epochs: int,
    num_classes: int | None = None,
    shard: grain.sharding.ShardOptions | None = None,
) -> grain.DatasetIterator:
  """Returns an iterator of shuffled, padded training batches for `num_epochs` epochs.

  Each epoch is a fresh permutation seeded by (seed, epoch); batches never span two
  epochs; the last batch of each epoch is zero-padded with mask 0. The iterator's
  `get_state()` is a small JSON-serialisable dict; `set_state()` on a fresh loader
  makes its next batch the one the original would give. `num_classes` defaults to
  the source's TFDS metadata.

  `shard` (default: this JAX process of all, ``grain.sharding.ShardByJaxProcess``)
  reads only rows ``[i * B / n, (i + 1) * B / n)`` of every global batch of
  ``B = batch_size``: shard ``i`` of ``n`` gets batches of ``B / n`` rows, and the
  ``n`` shards side by side are the batches one process reads alone (multi-host).

  >>> src = [{"image": np.zeros((2, 2, 1), np.uint8), "label": 1}] * 3
  >>> it = make_train_loader(src, batch_size=2, seed=0, num_epochs=1, num_classes=2)
  >>> [b["mask"].tolist() for b in it]
  [[1.0, 1.0], [1.0, 0.0]]
  """
  num_examples = len(source)
  steps_per_epoch = num_batches(num_examples, batch_size)
  rows = _shard_rows(batch_size, shard or grain.sharding.ShardByJaxProcess())

  def indices_of_step(step: int) -> np.ndarray:
    epoch, position = divmod(step, steps_per_epoch)
    order = _epoch_order(seed, epoch, num_examples)
    return order[position * batch_size : (position + 1) * batch_size][rows]

  return _batch_loader(
      source, num_epochs * steps_per_epoch, indices_of_step,
      batch_size=rows.stop - rows.start, num_classes=num_classes,
  )


def iterate_eval_batches(
    source: Sequence[dict], *, batch_size: int, num_classes: int | None = None
) -> grain.DatasetIterator:
  """Returns an iterator over `source` in order, every example once, last batch padded.

  >>> src = [{"image": np.zeros((2, 2, 1), np.uint8), "label": 1}] * 3
  >>> [int(b["mask"].sum()) for b in iterate_eval_batches(src, batch_size=2, num_classes=2)]
  [2, 1]
  """
  def indices_of_step(step: int) -> np.ndarray:
    return np.arange(step * batch_size, min((step + 1) * batch_size, len(source)))

  return _batch_loader(
      source, num_batches(len(source), batch_size), indices_of_step,
      batch_size=batch_size, num_classes=num_classes,
  )


def measure_throughput(batches: Iterator[dict], *, num_batches: int) -> float:
  """Returns real (mask 1) examples per second drawn from `batches` over `num_batches`.

  The first batch is drawn before the clock starts, so start-up is not counted.

  >>> measure_throughput(make_train_loader(src, ...), num_batches=20)  # doctest: +SKIP
  40000.0
  """
  next(batches)
  num_examples, start = 0.0, time.perf_counter()
  for _ in range(num_batches):
    num_examples += float(next(batches)["mask"].sum())
  return num_examples / (time.perf_counter() - start)


def open_splits(dataset: str, data_dir: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
  """Opens train/validation/test of a prepared dataset and checks the image shape.

  Raises:
    ValueError: the images do not have the shape the classifier takes.
  """
  sources = {split: open_split(dataset, split, data_dir) for split in SPLITS}
  found = tuple(np.asarray(sources["train"][0]["image"]).shape)
  if found != tuple(input_shape):
    raise ValueError(
        f"Images of {dataset!r} are {found} but the classifier takes {tuple(input_shape)}: "
        "set config.model.input_shape to the dataset's shape or prepare the dataset "
        "at the classifier's size.")
  return sources
