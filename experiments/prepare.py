r"""Prepares a known dataset into ArrayRecord files, offline; prints a JSON summary line.

The summary is the only line on stdout; TFDS's own messages go to stderr.

  python -m experiments.prepare --dataset=mnist5k --data_dir=data
  python -m experiments.prepare --dataset=uci_digits --data_dir=data

Already prepared datasets are not rebuilt. The summary line looks like
{"dataset": "mnist5k", "data_dir": "/abs/data", "version": "1.0.0", "built": true,
 "splits": {"test": 1000, "train": 3000, "validation": 1000}}
"""

import contextlib
import json
import sys

import tensorflow_datasets as tfds
from absl import app
from absl import flags

from dfm.data import preparation

_DATASET = flags.DEFINE_enum(
    "dataset", None, sorted(preparation.BUILDERS), "Dataset to prepare.", required=True
)
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Root directory of prepared datasets.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  tfds.disable_progress_bar()
  with contextlib.redirect_stdout(sys.stderr):  # TFDS prints progress to stdout.
    summary = preparation.prepare(_DATASET.value, _DATA_DIR.value)
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
