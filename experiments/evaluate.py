r"""The frozen classifier's accuracy on a prepared dataset, before any fine-tuning.

Run it first with a model of your own: near-chance accuracy on data the model
should know means its input convention (config.model.input) or output_kind is
wrong, not that it needs DFT.

  python -m experiments.evaluate --config=configs/own_model.py:gender_v1 \
      --config.data_dir=data

Prints the accuracy (and per class) on validation and test of config.dft.dataset
(or --dataset); writes nothing.
"""
from absl import app, flags
from ml_collections import config_flags

from dfm.run.evaluate import evaluate_frozen
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/own_model.py:gender_v1", lock_config=True)
_DATASET = flags.DEFINE_string("dataset", None, "Prepared dataset (default: config.dft.dataset).")
_SPLITS = flags.DEFINE_list("splits", ["validation", "test"], "Splits to evaluate on.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  exit_on_bad_input(lambda: evaluate_frozen(_CONFIG.value, _DATASET.value, tuple(_SPLITS.value)))


if __name__ == "__main__":
  run_app(main)
