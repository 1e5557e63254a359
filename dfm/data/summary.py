"""Describes a prepared dataset: examples and label counts per split, skipped examples.

>>> summarize("lfw_subset/25px_fold0", "data")  # doctest: +SKIP
{'dataset': 'lfw_subset/25px_fold0', 'splits': {'test': 20, ...},
 'labels': {'test': {'label': {'woman': 4, 'man': 16}, 'uncertain': {...}}, ...},
 'skipped': {}}
"""

import contextlib
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from dfm.data import preparation


def count_labels(source: Sequence[dict], features: tfds.features.FeaturesDict) -> dict:
  """Returns `{feature: {value name: count}}` for every ClassLabel feature of `source`.

  >>> count_labels([{"label": 1}], tfds.features.FeaturesDict(
  ...     {"label": tfds.features.ClassLabel(names=["no", "yes"])}))
  {'label': {'no': 0, 'yes': 1}}
  """
  class_labels = {
      key: feature for key, feature in features.items()
      if isinstance(feature, tfds.features.ClassLabel)
  }
  values = {key: [] for key in class_labels}
  for i in range(len(source)):
    example = source[i]
    for key in class_labels:
      values[key].append(int(example[key]))
  counts = {
      key: np.bincount(values[key], minlength=feature.num_classes).tolist()
      for key, feature in class_labels.items()
  }
  return {key: dict(zip(feature.names, counts[key])) for key, feature in class_labels.items()}


def summarize(name: str, data_dir: str) -> dict:
  """Returns examples per split, label counts per split and skipped counts by reason.

  `skipped` is what the builder recorded in its metadata (`faces.skipped_metadata`);
  datasets that never skip report `{}`. A builder with split protocols (LFW's
  `random` / `identity`) also reports the `protocol` it used. Raises FileNotFoundError if not prepared.
  """
  builder = preparation.get_builder(name, data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(f"Dataset {name!r} is not prepared in {builder.data_dir_root}.")
  splits = sorted(builder.info.splits)
  metadata = builder.info.metadata or {}
  return {
      "dataset": name,
      "splits": {split: builder.info.splits[split].num_examples for split in splits},
      "labels": {
          split: count_labels(builder.as_data_source(split=split), builder.info.features)
          for split in splits
      },
      "skipped": dict(metadata.get("skipped", {})),
      **({"protocol": metadata["protocol"]} if "protocol" in metadata else {}),
  }


def prepare_and_summarize(
    dataset: str,
    data_dir: str,
    *,
    manual_dir: str | None = None,
    max_examples: int | None = None,
    with_summary: bool = False,
) -> dict:
  """Prepares `dataset` (if needed) and returns what `python -m experiments.prepare`
  prints: the split sizes and, `with_summary`, label counts per split and skips.
  TFDS's progress goes to stderr, so stdout keeps only that line.

  >>> prepare_and_summarize("lfw_subset/25px_fold0", "data", with_summary=True)["skipped"]  # doctest: +SKIP
  {}
  """
  with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress to stdout.
    result = preparation.prepare(
        dataset, data_dir, manual_dir=manual_dir, max_examples=max_examples
    )
    if with_summary:
      result.update(summarize(dataset, data_dir))
  return result
