r"""Prepares a known dataset into ArrayRecord files, offline; prints a JSON summary line.

The summary is the only line on stdout; TFDS's own messages go to stderr. Datasets
are named `name` (default config) or `name/config`; an unknown one lists the valid ones:

  python -m experiments.prepare --dataset=mnist5k --data_dir=data
  python -m experiments.prepare --dataset=lfw_subset/32px_fold0 --data_dir=data --summary
  python -m experiments.prepare --dataset=uci_digits --data_dir=/tmp/look --max_examples=10

Already prepared datasets are not rebuilt. The summary line looks like
{"dataset": "mnist5k", "data_dir": "/abs/data", "version": "1.0.0", "built": true,
 "splits": {"test": 1000, "train": 3000, "validation": 1000}}
and with --summary also has, per split, the count of each value of each label, and the
examples skipped while preparing, by reason:
 "labels": {"test": {"label": {"woman": 4, "man": 16}, ...}, ...}, "skipped": {}
"""

import json

from absl import app
from absl import flags

from dfm.data import preparation
from dfm.data import summary
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app


def _check_dataset(name: str) -> bool:
  """Flag validator: a known `name` or `name/config`, else an error listing valid ones."""
  try:
    preparation.parse_name(name)
  except ValueError as error:
    raise flags.ValidationError(str(error)) from error
  return True


_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset to prepare: `name` or `name/config`.", required=True
)
flags.register_validator("dataset", _check_dataset)
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Root directory of prepared datasets.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder of the publisher's files (datasets that are not embedded)."
)
_MAX_EXAMPLES = flags.DEFINE_integer(
    "max_examples", None, "Cap on examples per split, for a quick look (use a scratch --data_dir).",
    lower_bound=1,
)
_SUMMARY = flags.DEFINE_bool(
    "summary", False, "Also report label counts per split and skipped examples."
)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  result = exit_on_bad_input(lambda: summary.prepare_and_summarize(
      _DATASET.value, _DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
      max_examples=_MAX_EXAMPLES.value, with_summary=_SUMMARY.value,
  ))
  print(json.dumps(result))


if __name__ == "__main__":
  run_app(main)
