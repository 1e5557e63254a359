r"""Query-only (or white-box) DFT of gender-v1.onnx on the embedded LFW faces, over 5 folds.

  python -m experiments.query_kfold --workdir=runs/query/gender_v1 \
      --grid='dft.lr=0.03,0.1,0.3' --grid='dft.noise_shape=(),(8,8,1)'
  python -m experiments.query_kfold --white_box --workdir=runs/own/gender_v1 \
      --grid='dft.lr=0.03,0.1,0.3' --grid='dft.noise_shape=(),(8,8,1)'

With `--white_box` each run is white-box DFT through the model's graph
(`configs/own_model.py:gender_v1`) instead of query-only DFT through onnxruntime
(`configs/query.py:gender_v1`): the same folds, grid and selection on validation.

For each fold k (test = fold k, validation = fold k+1, train = the other three;
`lfw_subset/25px_fold{k}`, prepared here if needed), every grid point of
`configs/query.py:gender_v1,fold=k` runs in `--workdir/fold{k}/<point>`. The point
with the best validation accuracy of its chosen noise is selected per fold (ties:
the first in grid order); its test accuracy is reported beside the model's own,
with the queries spent. Writes `kfold.md` and `kfold.csv` into the workdir and
prints the table. Finished runs are read back, interrupted ones resume.
"""
from pathlib import Path
from typing import Any

from absl import flags

from configs import own_model, query
from dfm import data
from dfm.report.tables import format_mean_std, markdown_table, write_csv
from dfm.run.methods import dft
from dfm.run.query_dft import query_dft
from dfm.run.workdir import run_once
from dfm.studies.sweep import configured, parse_grid, point_name, points
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

_WORKDIR = flags.DEFINE_string("workdir", "runs/query/gender_v1", "Where the runs go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where the folds are prepared.")
_OPTIONS = flags.DEFINE_string("options", "", "Options of configs/query.py:gender_v1, e.g. "
                               "'estimator=spsa,via=http'.")
_FOLDS = flags.DEFINE_list("folds", ["0", "1", "2", "3", "4"], "Test folds to run.")
_GRID = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,... as in experiments.sweep.")
_BUDGET = flags.DEFINE_integer("budget", 0, "config.budget.queries of every run (0: none).")
_WHITE_BOX = flags.DEFINE_bool("white_box", False, "White-box DFT through the model's graph "
                               "instead of query-only DFT.")
HEADER = ["fold", "selected", "test before (%)", "test after (%)", "val before (%)",
          "val after (%)", "PSNR (dB)", "queries of the run", "queries of the search"]


def _fold_config(fold: int):
  arg = ",".join(filter(None, ["gender_v1", _OPTIONS.value, f"fold={fold}"]))
  config = (own_model if _WHITE_BOX.value else query).get_config(arg)
  with config.unlocked():
    config.data_dir = _DATA_DIR.value
    if not _WHITE_BOX.value:
      config.budget.queries = _BUDGET.value
  return config


def _run_fold(fold: int, grid, root: Path) -> tuple[str, dict[str, Any], int]:
  """Runs every point of ``grid`` on ``fold``; returns the point selected on val, its
  results and the images all the points sent (the search's cost)."""
  base = _fold_config(fold)
  data.prepare(base.dft.dataset, base.data_dir)
  best, spent = None, 0
  for point in points(grid):
    config = configured(base, point, base.seed)
    results = run_once(dft if _WHITE_BOX.value else query_dft, config,
                       root / f"fold{fold}" / point_name(point))
    spent += results["queries"]["total"]["images"] if "queries" in results else 0
    if best is None or results["val"]["after"]["accuracy"] > best[1]["val"]["after"]["accuracy"]:
      best = (point_name(point), results)
  return *best, spent


def _row(fold: int, name: str, results: dict[str, Any], search: int) -> list[Any]:
  """One fold's line; no PSNR where validation chose no noise at all (N = 0); no
  queries for white-box runs."""
  queries = results.get("queries")
  chose_none = queries is not None and queries["chosen"]["batch"] == 0
  return [fold, name, 100 * results["before"]["accuracy"], 100 * results["after"]["accuracy"],
          100 * results["val"]["before"]["accuracy"], 100 * results["val"]["after"]["accuracy"],
          None if chose_none else results["after"]["psnr_db"],
          queries["total"]["images"] if queries else None, search if queries else None]


def kfold(root: Path, grid) -> str:
  """Runs and selects every fold; writes kfold.md and kfold.csv; returns the markdown."""
  rows = [_row(int(fold), *_run_fold(int(fold), grid, root)) for fold in _FOLDS.value]
  columns = list(zip(*rows))
  summary = (["mean +- std", ""] + [format_mean_std(column) for column in columns[2:7]]
             + [format_mean_std(column, digits=0) for column in columns[7:]])
  shown = [["-" if v is None else f"{v:.1f}" if isinstance(v, float) else v for v in row]
           for row in rows]
  write_csv(root / "kfold.csv", HEADER, rows)
  text = markdown_table(HEADER, [*shown, summary])
  (root / "kfold.md").write_text(text + "\n")
  return text


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  root = Path(_WORKDIR.value).absolute()
  grid = exit_on_bad_input(lambda: parse_grid(_GRID.value))
  print(exit_on_bad_input(lambda: kfold(root, grid)))
  print(f"Written: {root / 'kfold.md'}, {root / 'kfold.csv'}; per-fold test accuracy "
        f"mean over {len(_FOLDS.value)} folds.")


if __name__ == "__main__":
  run_app(main)
