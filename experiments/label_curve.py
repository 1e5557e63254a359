r"""When does fine-tuning the data beat fine-tuning the model? A label-efficiency curve.

  python -m experiments.label_curve --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/label_curve/mnist5k-uci_digits --shots=1,2,4,8,16,32,all --seeds=3

For every k of ``--shots`` labelled target images per class (a stratified, seeded,
nested subset; ``all``: the whole split), it runs DFT, DFT+MFT, MFT (all layers and
the head) and the linear probe (``--methods``), each at every learning rate of its
short grid (``--lr_grid=METHOD=V1,V2,...`` to change one), the learning rate chosen
on validation cut to k per class as well (``--val_shots=all``: the whole validation
split), test reported. The classifier of each seed is trained first (a model of your
own, ``config.model.kind``, serves every seed as it is). Runs go to
``WORKDIR/<method>/k=<k>/<lr>/seed<s>``; finished ones are read back, interrupted ones
resume, so the same command continues where it stopped. ``--launcher=slurm|ray``
submits them as ``experiments.sweep`` does (one job array or trial set per method);
run the command again once they have finished to write the curve.

Writes ``label_curve.md``, ``.csv``, ``.json`` and ``label_curve.png`` (test accuracy
against labels per class, log x, mean and range over seeds, one line per method, the
frozen classifier as a horizontal line), and states the crossover: the ks at which
DFT (or DFT+MFT) beats every model-side method on every seed, or that it never does.
"""
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from dfm.studies import label_curve
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app
from experiments.launchers import define_launcher_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "The experiment (SOURCE-TARGET).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the curve's runs and report go.")
_SHOTS = flags.DEFINE_list("shots", ["1", "2", "4", "8", "16", "32", "all"],
                           "Labelled target images per class; 'all': the whole split.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds, from config.seed up: subsets and classifiers.")
_METHODS = flags.DEFINE_list("methods", list(label_curve.METHODS),
                             f"Of {', '.join(label_curve.METHODS)}.")
_VAL_SHOTS = flags.DEFINE_enum("val_shots", "same", ["same", "all"],
                               "Validation: k per class as train (same), or the whole split.")
_LR_GRID = flags.DEFINE_multi_string("lr_grid", [], "METHOD=V1,V2,...: that method's learning "
                                     "rates (default: dfm.studies.label_curve.LR_GRIDS).")
flags.mark_flags_as_required(["config", "workdir"])
_, _CHOSEN_LAUNCHER = define_launcher_flags()


def _lr_grids() -> dict[str, tuple[str, tuple[float, ...]]]:
  grids = dict(label_curve.LR_GRIDS)
  for spec in _LR_GRID.value:
    name, _, values = spec.partition("=")
    try:
      grids[name] = (grids[name][0], tuple(float(v) for v in values.split(",")))
    except (KeyError, ValueError) as error:
      raise ValueError(f"--lr_grid={spec!r}: expected METHOD=V1,V2 (numbers) with METHOD one "
                       f"of {list(grids)}.") from error
  return grids


def curve() -> str:
  """Runs (or submits) the curve; its report, or what has not finished yet."""
  root = Path(_WORKDIR.value)
  summary = label_curve.run(
      _CONFIG.value, root, shots=label_curve.parse_shots(_SHOTS.value), seeds=_SEEDS.value,
      methods=_METHODS.value, lr_grids=_lr_grids(), full_validation=_VAL_SHOTS.value == "all",
      launch=_CHOSEN_LAUNCHER())
  if summary["missing"]:
    return (f"{len(summary['missing'])} runs have not finished (e.g. {summary['missing'][0]}); "
            "run this command again once they have.")
  return summary["text"] + f"\n\nWritten: {root / 'label_curve.md'}, .csv, .json, .png"


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  print(exit_on_bad_input(curve))


if __name__ == "__main__":
  run_app(main)
