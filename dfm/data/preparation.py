"""Builds the known datasets into ArrayRecord files, offline and idempotently.

>>> prepare("mnist5k", "data")  # doctest: +SKIP
{'dataset': 'mnist5k', 'data_dir': '/abs/data', 'version': '1.0.0', 'built': True, 'splits': {...}}
"""

import os

import tensorflow_datasets as tfds

from dfm.data import digits

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist5k": digits.Mnist5k,
    "uci_digits": digits.UciDigits,
}
FILE_FORMAT = "array_record"


def get_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the ArrayRecord builder of a known dataset; unknown names list the valid ones.

  >>> get_builder("uci_digits", "data").name
  'uci_digits'
  """
  if name not in BUILDERS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {sorted(BUILDERS)}.")
  return BUILDERS[name](data_dir=os.path.abspath(data_dir), file_format=FILE_FORMAT)


def prepare(name: str, data_dir: str) -> dict:
  """Writes dataset `name` under `data_dir` unless already there; returns a summary.

  The summary holds the dataset name, absolute data_dir, version, whether this call
  built the files, and the number of examples per split. Nothing is downloaded.

  >>> prepare("uci_digits", "/tmp/data")["splits"]  # doctest: +SKIP
  {'test': 359, 'train': 1078, 'validation': 360}
  """
  builder = get_builder(name, data_dir)
  already_prepared = builder.is_prepared()
  if not already_prepared:
    builder.download_and_prepare(file_format=FILE_FORMAT)
  return {
      "dataset": name,
      "data_dir": os.fspath(builder.data_dir_root),
      "version": str(builder.version),
      "built": not already_prepared,
      "splits": {split: info.num_examples for split, info in sorted(builder.info.splits.items())},
  }
