r"""When does fine-tuning the data beat fine-tuning the model? A label-efficiency curve.

  python -m experiments.label_curve --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/label_curve/mnist5k-uci_digits --shots=1,2,4,8,16,32,all --seeds=3

For every k of ``--shots`` labelled target images per class (a stratified, seeded,
nested subset; ``all``: the whole split), it runs DFT, DFT+MFT, MFT (all layers and
the head) and the linear probe (``--methods``), each at every learning rate of its
short grid (``--lr_grid=METHOD=V1,V2,...`` to change one), with the learning rate
chosen on validation cut to k per class as well (``--val_shots=all``: the whole
validation split) and test reported. The classifier of each seed is trained first
(a model of your own, ``config.model.kind``, serves every seed as it is). Runs go to
``WORKDIR/<method>/k=<k>/<lr>/seed<s>``; finished ones are read back, interrupted ones
resume, so the same command continues where it stopped. ``--launcher=slurm|ray``
submits them as ``experiments.sweep`` does (one job array or trial set per method);
run the command again once they have finished to write the curve.

Writes ``label_curve.md``, ``.csv``, ``.json`` and ``label_curve.png`` (test accuracy
against labels per class, log x, mean and range over seeds, one line per method, the
frozen classifier as a horizontal line), and states the crossover: the largest k at
which DFT (or DFT+MFT) beats every model-side method on every seed, or that it never does.
"""
import json
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from dfm.studies import label_curve
from dfm.studies.compare import seed_classifier
from dfm.run.workdir import claim_workdir
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
                                     "rates (default: label_curve.LR_GRIDS).")
flags.mark_flags_as_required(["config", "workdir"])
_, _CHOSEN_LAUNCHER = define_launcher_flags()


def _lr_grids() -> dict[str, tuple[str, tuple[float, ...]]]:
  grids = dict(label_curve.LR_GRIDS)
  for spec in _LR_GRID.value:
    name, _, values = spec.partition("=")
    if name not in grids or not values:
      raise ValueError(f"--lr_grid={spec!r}: expected METHOD=V1,V2 with METHOD one of "
                       f"{list(grids)}.")
    grids[name] = (grids[name][0], tuple(float(v) for v in values.split(",")))
  return grids


def _read(workdir: Path) -> dict | None:
  finished = workdir / "metrics.json"
  return json.loads(finished.read_text()) if finished.is_file() else None


def curve(config, root: Path) -> str:
  """Trains the classifiers, runs (or submits) every run, writes the curve when all are done."""
  unknown = sorted(set(_METHODS.value) - set(label_curve.METHODS))
  if unknown or not _METHODS.value:
    raise ValueError(f"--methods: unknown {unknown}; choose from {list(label_curve.METHODS)}.")
  shots = label_curve.parse_shots(_SHOTS.value)
  root = claim_workdir(str(root), config)
  seeds = list(range(config.seed, config.seed + _SEEDS.value))
  trains = config.model.get("kind", "vgg") == "vgg"
  classifiers = {seed: str(seed_classifier(config, seed, root)) if trains else None
                 for seed in seeds}
  runs = label_curve.plan(config, root, shots=shots, seeds=seeds, methods=_METHODS.value,
                          lr_grids=_lr_grids(), classifier_dirs=classifiers,
                          full_validation=_VAL_SHOTS.value == "all")
  launch = _CHOSEN_LAUNCHER()
  for name, method_runs in runs.items():
    print(f"== {label_curve.TITLES[name]}: {len(method_runs)} runs", flush=True)
    launch(method_runs, root / name, experiment=label_curve.METHODS[name][0], seeds=1)
  summary = label_curve.summarize(runs, _read)
  if summary["missing"]:
    return (f"{len(summary['missing'])} of {sum(map(len, runs.values()))} runs have not "
            f"finished (e.g. {summary['missing'][0]}); run this command again once they have.")
  source = config.train.dataset if trains else Path(config.model.get("path", "")).name
  text = label_curve.write_report(
      root, summary, title=f"{source} -> {config.dft.dataset}",
      all_labels=label_curve.class_counts(config)["train"] / config.model.num_classes)
  return text + f"\n\nWritten: {root / 'label_curve.md'}, .csv, .json, .png"


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  print(exit_on_bad_input(lambda: curve(_CONFIG.value, Path(_WORKDIR.value))))


if __name__ == "__main__":
  run_app(main)
