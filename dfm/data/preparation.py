"""Builds the known datasets into ArrayRecord files, offline and idempotently.

A dataset is named `name` (its default config) or `name/config`, as in TFDS:
`mnist5k`, `lfw_subset`, `lfw_subset/32px_fold3`.

>>> prepare("lfw_subset/32px_fold0", "data")  # doctest: +SKIP
{'dataset': 'lfw_subset/32px_fold0', 'data_dir': '/abs/data', 'version': '1.0.0', ...}
"""

import os

import tensorflow_datasets as tfds

from dfm.data import celeba
from dfm.data import digits
from dfm.data import image_folder
from dfm.data import lfw
from dfm.data import lfw_subset
from dfm.data import muct
from dfm.data import npz

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist5k": digits.Mnist5k,
    "uci_digits": digits.UciDigits,
    "lfw": lfw.Lfw,
    "lfw_subset": lfw_subset.LfwSubset,
    "celeba": celeba.Celeba,
    "muct": muct.Muct,
    "image_folder": image_folder.ImageFolder,
    "npz": npz.Npz,
}
FILE_FORMAT = "array_record"


def parse_name(name: str) -> tuple[str, str | None]:
  """Splits `name` or `name/config` into (builder name, config name or None), checked.

  Raises ValueError naming the known datasets, or the valid configs of the builder.

  >>> parse_name("lfw_subset/32px_fold0")
  ('lfw_subset', '32px_fold0')
  """
  builder_name, _, config = name.partition("/")
  if builder_name not in BUILDERS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {sorted(BUILDERS)}.")
  configs = [c.name for c in BUILDERS[builder_name].BUILDER_CONFIGS]
  if config and config not in configs:
    valid = f"valid configs: {configs}" if configs else "it has no configs"
    raise ValueError(f"Unknown config {config!r} of dataset {builder_name!r}; {valid}.")
  return builder_name, config or None


def get_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Returns the ArrayRecord builder of a known `name` or `name/config`.

  >>> get_builder("lfw_subset/32px_fold0", "data").builder_config.size
  32
  """
  builder_name, config = parse_name(name)
  return BUILDERS[builder_name](
      config=config, data_dir=os.path.abspath(data_dir), file_format=FILE_FORMAT
  )


def prepare(
    name: str, data_dir: str, *, manual_dir: str | None = None, max_examples: int | None = None
) -> dict:
  """Writes dataset `name` under `data_dir` unless already there; returns a summary.

  The summary holds the dataset name, absolute data_dir, version, whether this call
  built the files, and the number of examples per split. Nothing is downloaded.
  `manual_dir` holds the publisher's files for datasets that need them (embedded
  ones ignore it); `max_examples` caps each split, for a quick look: prepare such a
  look into a scratch `data_dir`, since prepared files are reused as they are. A user's
  dataset (`image_folder`, `npz`) is refused if `data_dir` holds one from other files.

  >>> prepare("uci_digits", "/tmp/data")["splits"]  # doctest: +SKIP
  {'test': 359, 'train': 1078, 'validation': 360}
  """
  builder = get_builder(name, data_dir)
  if manual_dir is not None and isinstance(builder, image_folder.UserImages):
    builder.check_source(manual_dir)  # Never reuse files prepared from another source.
  already_prepared = builder.is_prepared()
  if not already_prepared:
    builder.download_and_prepare(
        file_format=FILE_FORMAT,
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir, max_examples_per_split=max_examples
        ),
    )
  return {
      "dataset": name,
      "data_dir": os.fspath(builder.data_dir_root),
      "version": str(builder.version),
      "built": not already_prepared,
      "splits": {split: info.num_examples for split, info in sorted(builder.info.splits.items())},
  }
