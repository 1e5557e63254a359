"""Builds the known datasets into ArrayRecord files, offline and idempotently.

A dataset is named `name` (its default config) or `name/config`, as in TFDS:
`mnist5k`, `lfw_subset`, `lfw_subset/32px_fold3`.

>>> prepare("lfw_subset/32px_fold0", "data")  # doctest: +SKIP
{'dataset': 'lfw_subset/32px_fold0', 'data_dir': '/abs/data', 'version': '1.0.0', ...}
"""

import contextlib
import os
import sys
from pathlib import Path

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


def _silence_download_banners(builder: tfds.core.DatasetBuilder) -> None:
  """TFDS prints "Downloading and preparing dataset Unknown size ..." and "downloaded
  and prepared" even for a build from local files; :func:`prepare` says it itself."""
  builder._log_download_bytes = lambda: None  # pylint: disable=protected-access
  builder._log_download_done = lambda: None  # pylint: disable=protected-access


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
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise ValueError(f"data_dir {os.path.abspath(data_dir)} is a file, not a folder: pass "
                     "--data_dir (or --config.data_dir) a folder; it is created if missing.")
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
  A prepare that fails leaves nothing of its own behind in `data_dir`.

  >>> prepare("uci_digits", "/tmp/data")["splits"]  # doctest: +SKIP
  {'test': 359, 'train': 1078, 'validation': 360}
  """
  before = _paths_under(data_dir)
  try:
    return _prepare(name, data_dir, manual_dir=manual_dir, max_examples=max_examples)
  except BaseException:
    _remove_new_paths(data_dir, before)
    raise


def _paths_under(data_dir: str) -> set[Path]:
  root = Path(data_dir)
  return {root, *root.rglob("*")} if root.is_dir() else set()


def _remove_new_paths(data_dir: str, before: set[Path]) -> None:
  """Removes what a failed prepare created under ``data_dir``: its own files and folders,
  deepest first; nothing that was there before it started."""
  for path in sorted(_paths_under(data_dir) - before, key=lambda p: len(p.parts), reverse=True):
    if path.is_dir() and not path.is_symlink():
      if not any(path.iterdir()):
        path.rmdir()
    else:
      path.unlink(missing_ok=True)


def _prepare(name: str, data_dir: str, *, manual_dir: str | None, max_examples: int | None
             ) -> dict:
  builder = get_builder(name, data_dir)
  if manual_dir is not None and isinstance(builder, image_folder.UserImages):
    builder.check_source(manual_dir)  # Never reuse files prepared from another source.
  already_prepared = builder.is_prepared()
  if not already_prepared:
    print(f"Preparing {name} in {builder.data_dir_root} (offline: nothing is downloaded).",
          file=sys.stderr, flush=True)
    _silence_download_banners(builder)
    with contextlib.redirect_stdout(sys.stderr):  # stdout stays the caller's (a JSON line).
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
