r"""How much of the white-box DFT gain query-only DFT buys, and for how many queries.

  make demo   # trains runs/demo/classifier, the frozen mnist5k VGG
  python -m experiments.query_benchmark --classifier_dir=runs/demo/classifier \
      --workdir=runs/query_benchmark --budget=100000

The digits case: the frozen mnist5k VGG is fine-tuned for uci_digits twice.

1. White-box DFT (`configs/digits.py:mnist5k_to_uci`): gradients through the model.
2. Query-only DFT (`configs/query.py:digits`), the same model seen only through
   its scores, for each estimator (SPSA, NES) and noise (full 28x28, low 7x7),
   stopped at `--budget` images scored (estimates and validation together).

Prints, per variant, validation accuracy of the chosen noise against queries
spent, the queries it took to reach `--fraction` (80%) of the white-box gain on
validation, and the test accuracy of the final choice beside the white-box one;
then one JSON line. Runs go to `--workdir/<name>`; a finished one is read back, an
interrupted one resumes.
"""
import json
from pathlib import Path
from typing import Any

from absl import flags

from configs import digits, query
from dfm.run.methods import dft
from dfm.run.query_dft import query_dft
from dfm.run.workdir import run_once
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

_CLASSIFIER_DIR = flags.DEFINE_string("classifier_dir", "runs/demo/classifier",
                                      "The frozen mnist5k classifier (make demo trains it).")
_DATA_DIR = flags.DEFINE_string("data_dir", "data", "Where mnist5k and uci_digits are prepared.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/query_benchmark", "Where the runs go.")
_BUDGET = flags.DEFINE_integer("budget", 100_000, "Images the model may score per variant.")
_FRACTION = flags.DEFINE_float("fraction", 0.8, "Share of the white-box gain to reach.")
_VARIANTS = flags.DEFINE_list("variants", ["spsa-full", "nes-full", "spsa-low", "nes-low"],
                              "ESTIMATOR-NOISE pairs (noise: full or low).")


def _white_box(workdir: Path) -> dict[str, Any]:
  config = digits.get_config("mnist5k_to_uci")
  with config.unlocked():
    config.classifier_dir, config.data_dir = _CLASSIFIER_DIR.value, _DATA_DIR.value
  return run_once(dft, config, workdir / "white_box")


def _query_only(variant: str, workdir: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
  estimator, _, noise = variant.partition("-")
  config = query.get_config(f"digits,estimator={estimator},noise={noise}")
  with config.unlocked():
    config.classifier_dir, config.data_dir = _CLASSIFIER_DIR.value, _DATA_DIR.value
    config.budget.queries = _BUDGET.value
  results = run_once(query_dft, config, workdir / variant)
  lines = (workdir / variant / "queries.csv").read_text().splitlines()
  header = lines[0].split(",")
  curve = [dict(zip(header, map(float, line.split(",")))) for line in lines[1:]]
  return results, curve


def _gain(results: dict[str, Any], split: str) -> float:
  scores = results if split == "test" else results["val"]
  return scores["after"]["accuracy"] - scores["before"]["accuracy"]


def _share(part: float, whole: float) -> float:
  """``part / whole``, NaN when the white-box gain is 0."""
  return part / whole if whole else float("nan")


def _queries_to(curve: list[dict[str, float]], target: float) -> int | None:
  """Images spent when the chosen noise first reached ``target`` validation accuracy."""
  return next((int(p["queries_images"]) for p in curve if p["best_val_accuracy"] >= target), None)


def _report(variant: str, results, curve, white) -> dict[str, Any]:
  baseline = curve[0]["val_accuracy"]
  target = baseline + _FRACTION.value * _gain(white, "val")
  reached = _queries_to(curve, target)
  summary = {
      "variant": variant, "queries": results["queries"]["fit"]["images"],
      "val_chosen": results["val"]["after"]["accuracy"],
      "val_gain_fraction": _share(_gain(results, "val"), _gain(white, "val")),
      "test_before": results["before"]["accuracy"], "test_after": results["after"]["accuracy"],
      "test_gain_fraction": _share(_gain(results, "test"), _gain(white, "test")),
      "psnr_db": results["after"].get("psnr_db"),
      f"queries_to_{round(100 * _FRACTION.value)}pct_val_gain": reached,
  }
  print(f"\n{variant}: queries -> validation accuracy of the chosen noise")
  for point in curve:
    print(f"  {int(point['queries_images']):>7d}  {100 * point['best_val_accuracy']:5.1f}%")
  print(f"  {100 * _FRACTION.value:.0f}% of the white-box val gain (>= {100 * target:.1f}%): "
        f"{'not reached' if reached is None else f'{reached} queries'}; test "
        f"{100 * summary['test_before']:.1f}% -> {100 * summary['test_after']:.1f}% "
        f"({100 * summary['test_gain_fraction']:.0f}% of the white-box test gain)", flush=True)
  return summary


def main(argv: list[str]) -> None:
  del argv
  quiet_library_logs()
  workdir = Path(_WORKDIR.value)
  white = exit_on_bad_input(lambda: _white_box(workdir))
  print(f"White-box DFT: val {100 * white['val']['before']['accuracy']:.1f}% -> "
        f"{100 * white['val']['after']['accuracy']:.1f}%, test "
        f"{100 * white['before']['accuracy']:.1f}% -> {100 * white['after']['accuracy']:.1f}%",
        flush=True)
  summaries = [
      _report(variant, *exit_on_bad_input(lambda v=variant: _query_only(v, workdir)), white)
      for variant in _VARIANTS.value]
  print(json.dumps({"white_box_test_gain": _gain(white, "test"),
                    "white_box_val_gain": _gain(white, "val"), "variants": summaries}))


if __name__ == "__main__":
  run_app(main)
