"""Gathers finished runs into one table, selecting on validation and reporting test.

Every ``metrics.json`` of a DFT, MFT, DFT+MFT or query-only DFT run below DIR is
read; runs that differ only in their ``seed<s>`` folder form one row (mean +- std
over seeds). For each method, source (the classifier's dataset, or a black box's
file) and target the row with the best mean validation accuracy is selected, among
the rows with the most seeds and, where images are perturbed, a mean validation
PSNR of at least ``--min_val_psnr``; its test accuracy is the result to report.
Writes DIR/collect.md and DIR/collect.csv. A sweep's manifest (``DIR/sweep.json``)
lists the runs it launched: those not finished are named below the table, each
failed one with its last error line.

Example::

  print(collect("runs/sweep", min_val_psnr=23.0))
"""
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dfm.report.tables import format_mean_std, markdown_table, mean_std, write_csv
from dfm.studies import manifest

SEED_FOLDER = re.compile(r"seed\d+")
HEADER = ["run", "method", "source", "target", "seeds", "val accuracy (%)", "test accuracy (%)",
          "val PSNR (dB)", "test PSNR (dB)", "selected"]


def _source(config: dict[str, Any]) -> str:
  """The model a run adapted to: the classifier's dataset, or the black box queried."""
  if "train" in config:
    return config["train"]["dataset"]
  box = config.get("black_box")
  if box is None:
    return "?"
  return {"jax": config.get("classifier_dir"), "onnx": box["path"],
          "http": f"{box['url']}/v2/models/{box['model_name']}"}.get(box["kind"], "?")


def find_runs(root: Path) -> dict[str, list[dict[str, Any]]]:
  """Finished fine-tuning runs below ``root``, grouped by their path without seed folders."""
  if not root.is_dir():
    raise FileNotFoundError(f"{root} is not a folder of runs; pass the --workdir of a sweep "
                            "or a compare.")
  groups = defaultdict(list)
  for path in sorted(root.rglob("metrics.json")):
    results = json.loads(path.read_text())
    if "method" not in results:
      continue  # A classifier's run.
    config = json.loads((path.parent / "config.json").read_text())
    results["source"] = _source(config)
    parts = [p for p in path.parent.relative_to(root).parts if not SEED_FOLDER.fullmatch(p)]
    groups["/".join(parts) or "."].append(results)
  if not groups:
    raise ValueError(f"No finished DFT, MFT or DFT+MFT run (metrics.json) below {root}.")
  return dict(groups)


def _psnr(runs: list[dict], split: str) -> list[float]:
  reports = [r["after"] if split == "test" else r["val"]["after"] for r in runs]
  return [r["psnr_db"] for r in reports if "psnr_db" in r]


def _task(runs: list[dict]) -> tuple[str, str, str]:
  return runs[0]["method"], runs[0]["source"], runs[0]["dataset"]


def select(groups: dict[str, list[dict]], min_val_psnr: float) -> dict[tuple[str, str, str], str]:
  """``(method, source, target) -> run`` with the best mean val accuracy.

  Only rows with as many seeds as the most complete row of their task compete (a
  row with one lucky seed finished cannot win), and only those whose mean val PSNR
  is at least ``min_val_psnr`` where images are perturbed.
  """
  most_seeds: dict[tuple[str, str, str], int] = defaultdict(int)
  for runs in groups.values():
    most_seeds[_task(runs)] = max(most_seeds[_task(runs)], len(runs))
  best: dict[tuple[str, str, str], tuple[float, str]] = {}
  for name, runs in groups.items():
    psnr = _psnr(runs, "val")
    key = _task(runs)
    if (psnr and np.mean(psnr) < min_val_psnr) or len(runs) < most_seeds[key]:
      continue
    val = mean_std([r["val"]["after"]["accuracy"] for r in runs])[0]
    if key not in best or val > best[key][0]:
      best[key] = (val, name)
  return {key: name for key, (_, name) in best.items()}


def collect(root: str, *, min_val_psnr: float = 0.0) -> str:
  """Writes collect.md and collect.csv into ``root``; returns the markdown."""
  root_path = Path(root).absolute()
  unfinished = manifest.unfinished_text(root_path) if root_path.is_dir() else ""
  try:
    groups = find_runs(root_path)
  except ValueError as error:
    if not unfinished:
      raise
    raise ValueError(f"{error}\n{unfinished}") from None
  selected = set(select(groups, min_val_psnr).values())
  rows, csv_rows = [], []
  for name, runs in groups.items():
    val = [r["val"]["after"]["accuracy"] for r in runs]
    test = [r["after"]["accuracy"] for r in runs]
    val_psnr, test_psnr = _psnr(runs, "val"), _psnr(runs, "test")
    mark = "yes" if name in selected else ""
    rows.append([name, *_task(runs), len(runs),
                 format_mean_std(val, scale=100), format_mean_std(test, scale=100),
                 format_mean_std(val_psnr), format_mean_std(test_psnr), mark])
    csv_rows.append([name, *_task(runs), len(runs),
                     *mean_std(val), *mean_std(test),
                     np.mean(val_psnr) if val_psnr else "", np.mean(test_psnr) if test_psnr else "",
                     mark])
  text = (f"Runs below {root_path}; selected: best mean val accuracy per method, source and "
          "target, among the rows with the most seeds"
          f"{f' with val PSNR >= {min_val_psnr} dB' if min_val_psnr else ''}.\n\n"
          + markdown_table(HEADER, rows) + (f"\n\n{unfinished}" if unfinished else ""))
  (root_path / "collect.md").write_text(text + "\n")
  write_csv(root_path / "collect.csv",
            ["run", "method", "source", "target", "seeds", "val_accuracy_mean", "val_accuracy_std",
             "test_accuracy_mean", "test_accuracy_std", "val_psnr_db", "test_psnr_db", "selected"],
            csv_rows)
  return text + f"\n\nWritten: {root_path / 'collect.md'}, {root_path / 'collect.csv'}"
