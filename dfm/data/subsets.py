"""Few labels: a stratified, seeded, nested subset of a split, k examples per class.

The user with a frozen model and a handful of labelled images: ``k`` per class to
fine-tune on, and about as many to choose settings on. For a seed, each class's
examples are put in one random order (independent of ``k``) and the first ``k``
taken, so the 2-shot subset holds the 1-shot one, the 4-shot the 2-shot, and so on;
every method run with the same seed sees the same images. ``k = 0`` is the whole split.

Example::

  sources = open_splits("uci_digits", "data", (28, 28, 1))
  sources = few_labels(sources, examples_per_class=4, val_examples_per_class=4, seed=0)
  len(sources["train"])  # 40: 4 of each of the 10 digits
"""
from collections.abc import Sequence
from typing import Any

import numpy as np

from dfm.data.arrays import ArraySplit
from dfm.data.pipeline import class_names_of
from dfm.data.reading import make_reader

# Seeds the order of each class's examples, with the run's seed and the split.
SUBSET_SEED = 20261201
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}


def subset_indices(labels: np.ndarray, examples_per_class: int, *, seed: int,
                   split: str = "train", num_classes: int = 0) -> np.ndarray:
  """The sorted indices of ``examples_per_class`` examples of each class in ``labels``
  (classes ``0..num_classes-1``; 0: those that occur).

  Nested in ``examples_per_class`` for a fixed ``seed`` and ``split``.

  Raises:
    ValueError: a class with fewer examples than asked (named, with the largest k
      possible), or none at all.

  >>> labels = np.array([0, 0, 0, 1, 1, 1])
  >>> set(subset_indices(labels, 1, seed=0)) <= set(subset_indices(labels, 2, seed=0))
  True
  >>> len(subset_indices(labels, 2, seed=0))
  4
  """
  if examples_per_class < 1:
    raise ValueError(f"examples_per_class must be positive (0 means the whole split), got "
                     f"{examples_per_class}.")
  rng = np.random.default_rng((SUBSET_SEED, seed, _SPLIT_STREAMS[split]))
  classes = range(num_classes) if num_classes else np.unique(labels)
  counts = {int(label): int(np.sum(labels == label)) for label in classes}
  if min(counts.values()) < examples_per_class:
    short = {label: n for label, n in counts.items() if n < examples_per_class}
    raise ValueError(
        f"The {split} split has fewer than {examples_per_class} examples of class(es) "
        f"{short} (label: count): ask for at most {min(counts.values())} per class, or 0 "
        "for the whole split.")
  chosen = [rng.permutation(np.flatnonzero(labels == label))[:examples_per_class]
            for label in sorted(counts)]
  return np.sort(np.concatenate(chosen))


def labelled_subset(source: Sequence[dict], examples_per_class: int, *, seed: int,
                    split: str = "train") -> Sequence[dict]:
  """``source`` itself for ``examples_per_class = 0``; else its subset as an
  :class:`ArraySplit` (read once into memory: a few labels are small)."""
  if examples_per_class == 0:
    return source
  images, labels = make_reader(source)(list(range(len(source))))
  class_names = class_names_of(source)
  chosen = subset_indices(labels, examples_per_class, seed=seed, split=split,
                          num_classes=len(class_names))
  return ArraySplit(images[chosen], labels[chosen], class_names=class_names,
                    name=f"{examples_per_class} {split} examples per class")


def few_labels(sources: dict[str, Any], *, examples_per_class: int,
               val_examples_per_class: int, seed: int) -> dict[str, Any]:
  """``sources`` with train and validation cut to k examples per class (0: whole);
  test stays whole: it is only reported."""
  return {**sources,
          "train": labelled_subset(sources["train"], examples_per_class, seed=seed),
          "validation": labelled_subset(sources["validation"], val_examples_per_class,
                                        seed=seed, split="validation")}


def schedule_labels(schedule: Any, sources: dict[str, Any], seed: int) -> dict[str, Any]:
  """:func:`few_labels` with a config section's ``examples_per_class`` and
  ``val_examples_per_class`` (both 0, the whole splits, where the section has none)."""
  return few_labels(sources, examples_per_class=schedule.get("examples_per_class", 0),
                    val_examples_per_class=schedule.get("val_examples_per_class", 0),
                    seed=seed)
