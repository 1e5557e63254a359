r"""Query-only estimators side by side: how many images scored buy how much of white-box DFT.

  make demo   # trains runs/demo/classifier, the frozen mnist5k VGG
  python -m experiments.query_benchmark --classifier_dir=runs/demo/classifier \
      --workdir=runs/query_benchmark --budget=100000 --seeds=0,1,2

The digits case: the frozen mnist5k VGG of `make demo`, fine-tuned for uci_digits
by white-box DFT (`configs/digits.py:mnist5k_to_uci`, the reference, one run per
seed) and by query-only DFT (`configs/query.py:digits`) with every estimator of
`VARIANTS` on the same budget and seeds. Every choice is made on validation (the
noise kept, by the run's significance rule); test is read only for this report:
each noise a run kept (`chosen/<images>.npy`) is scored on test through the
model's own JAX function, which sends no query.

Prints and writes to `--workdir` (`benchmark.md`, `.csv`, `.json`, `.png`), per
variant (mean +- std over seeds): the images scored until the kept noise first
reached 50%, 80% and 90% of the white-box test gain (a seed that never did
counts as missing: `k/3` says how many did), the share of the gain at the end,
and the final PSNR and SSIM; and one figure of the share against images scored.
Runs go to `--workdir/<variant>/seed<k>`; finished ones are read back.
"""
import json
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from configs import digits, query
from dfm import data, models
from dfm.report.figures import plot_gain_curves
from dfm.report.tables import format_mean_std, markdown_table, write_csv
from dfm.run.evaluate import evaluate_split, make_eval_step
from dfm.run.methods import dft, train_classifier
from dfm.run.phases import CHOSEN_DIR
from dfm.run.query_dft import query_dft
from dfm.run.workdir import run_once
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

# A step of estimator=distill: 256 images scored, 16 noise updates through the student.
DISTILL = {"focus": 0.0, "updates_per_estimate": 16, "dft.batch_size": 256, "dft.lr": 0.3}
# name -> overrides of config.query (and config.dft: "dft.*"); "surrogate": which one
# (_surrogate). Settings chosen on validation; distill's are a first choice, not tuned.
VARIANTS = {
    "nes": {},
    "spsa": {"estimator": "spsa"},
    "nes-dct12": {"frequencies": 12},
    "nes-previous": {"prior": "previous"},
    "nes-lookahead": {"lookahead": 0.5},
    "nes-surrogate": {"prior": "surrogate", "surrogate": "trained"},
    "nes-untrained-surrogate": {"prior": "surrogate", "surrogate": "untrained"},
    "cma_es-dct8": {"estimator": "cma_es", "frequencies": 8, "focus": 0.0, "scale": 0.3},
    "sep_cma_es": {"estimator": "sep_cma_es", "focus": 0.0, "scale": 0.2},
    "open_es": {"estimator": "open_es", "focus": 0.0},
    "distill": {"estimator": "distill", "surrogate": "trained", **DISTILL},
    "distill-untrained-student": {"estimator": "distill", "surrogate": "untrained", **DISTILL},
}

_CLASSIFIER_DIR = flags.DEFINE_string("classifier_dir", "runs/demo/classifier",
                                      "The frozen mnist5k classifier (make demo trains it).")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where mnist5k and uci_digits are prepared.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/query_benchmark", "Where the runs go.")
_BUDGET = flags.DEFINE_integer("budget", 100_000, "Images the model may score per run.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every variant.")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS), f"Of {', '.join(VARIANTS)}.")
_FRACTIONS = (0.5, 0.8, 0.9)


def _configured(config, seed: int):
  with config.unlocked():
    config.classifier_dir, config.data_dir = _CLASSIFIER_DIR.value, _DATA_DIR.value
    config.seed, config.figures = seed, False
  return config


def _white_box(seed: int, workdir: Path) -> dict[str, Any]:
  config = _configured(digits.get_config("mnist5k_to_uci"), seed)
  return run_once(dft, config, workdir / "white_box" / f"seed{seed}")


def _surrogate(kind: str, workdir: Path) -> dict[str, Any]:
  """``config.query.surrogate``: dfm's tiny VGG (not the black box's VGG6) trained 8
  epochs on mnist5k (seed 1), or ``untrained``: the same at its initial weights
  (one epoch at lr 1e-12, seed 2), a prior that should be of no use."""
  config = _configured(digits.get_config("mnist5k,runlocal"), 1 if kind == "trained" else 2)
  with config.unlocked():
    config.train.update(**({"epochs": 8} if kind == "trained" else {"epochs": 1, "lr": 1e-12}))
  run_dir = workdir / f"surrogate_{kind}"
  run_once(train_classifier, config, run_dir)
  return {"model": config.model.to_dict(), "classifier_dir": str(run_dir)}


def _query_config(variant: str, seed: int, workdir: Path):
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")
  config = _configured(query.get_config("digits"), seed)
  with config.unlocked():
    config.budget.queries = _BUDGET.value
    for key, value in VARIANTS[variant].items():
      if key == "surrogate":
        value = _surrogate(value, workdir)
      section, _, field = key.rpartition(".")
      target = config[section] if section else config.query
      target[field] = value
  return config


def _test_curve(run_dir: Path, evaluate) -> list[tuple[int, float]]:
  """``(images spent, test accuracy)`` of each noise the run kept, in order."""
  return [(int(path.stem), evaluate(np.load(path)))
          for path in sorted((run_dir / CHOSEN_DIR).glob("*.npy"))]


def _first_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
  return next((images for images, accuracy in curve if accuracy >= target), None)


def _variant_summary(variant: str, runs: list[tuple[dict, list]], before: float,
                     gain: float) -> tuple[list[Any], dict[str, Any]]:
  reached = {f: [_first_reaching(curve, before + f * gain) for _, curve in runs]
             for f in _FRACTIONS}
  shares = [(r["after"]["accuracy"] - before) / gain for r, _ in runs]
  psnr = [r["after"].get("psnr_db", float("inf")) for r, _ in runs]
  ssim = [r["after"].get("ssim", 1.0) for r, _ in runs]
  spent = [r["queries"]["fit"]["images"] for r, _ in runs]
  val = [100 * r["val"]["after"]["accuracy"] for r, _ in runs]
  cells = [variant, format_mean_std(val)]
  for f in _FRACTIONS:
    hits = [images for images in reached[f] if images is not None]
    cells.append((format_mean_std(hits, digits=0) if hits else "-")
                 + f" ({len(hits)}/{len(runs)})")
  cells += [format_mean_std([100 * s for s in shares]), format_mean_std(psnr),
            format_mean_std(ssim, digits=2), format_mean_std(spent, digits=0)]
  return cells, {"variant": variant, "val_accuracy": val, "reached": reached,
                 "test_gain_share": shares, "psnr_db": psnr, "ssim": ssim, "images_spent": spent}


HEADER = ["variant", "val accuracy kept (%)",
          *[f"images to {round(100 * f)}% of the gain" for f in _FRACTIONS],
          "share of the gain at the end (%)", "PSNR (dB)", "SSIM", "images spent"]


def benchmark(workdir: Path) -> str:
  """Runs everything (or reads it back), writes the table, figure and JSON; returns the table."""
  seeds = [int(seed) for seed in _SEEDS.value]
  whites = [_white_box(seed, workdir) for seed in seeds]
  before = whites[0]["before"]["accuracy"]
  gain = float(np.mean([white["after"]["accuracy"] for white in whites])) - before
  config = _configured(query.get_config("digits"), seeds[0])
  apply_fn, params = models.load_frozen_classifier(config)
  test = data.open_splits("uci_digits", config.data_dir, config.model.input_shape)["test"]
  eval_step = make_eval_step(apply_fn, transform=config.dft.transform)

  def evaluate(noise):
    return evaluate_split(eval_step, params, noise, test, config)["accuracy"]

  rows, summaries, curves = [], [], {}
  for variant in _VARIANTS.value:
    runs = []
    for seed in seeds:
      run_dir = workdir / variant / f"seed{seed}"
      results = run_once(query_dft, _query_config(variant, seed, workdir), run_dir)
      runs.append((results, [(0, before)] + _test_curve(run_dir, evaluate)))
    cells, summary = _variant_summary(variant, runs, before, gain)
    rows.append(cells)
    summaries.append(summary)
    curves[variant] = [curve for _, curve in runs]
  text = markdown_table(HEADER, rows)
  (workdir / "benchmark.md").write_text(text + "\n")
  write_csv(workdir / "benchmark.csv", HEADER, rows)
  (workdir / "benchmark.json").write_text(json.dumps(
      {"budget": _BUDGET.value, "seeds": seeds, "test_before": before,
       "white_box_test_gain": gain, "variants": summaries}, indent=1))
  plot_gain_curves(curves, before=before, gain=gain, budget=_BUDGET.value,
                   path=workdir / "benchmark.png")
  return (f"White-box DFT: test {100 * before:.1f}% -> {100 * (before + gain):.1f}% "
          f"(mean over {len(seeds)} seeds).\n" + text)


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  workdir = Path(_WORKDIR.value).absolute()
  print(exit_on_bad_input(lambda: benchmark(workdir)))
  print(f"Written: {workdir / 'benchmark.md'}, .csv, .json, .png")


if __name__ == "__main__":
  run_app(main)
