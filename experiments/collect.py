r"""Gathers finished runs into one table, selecting on validation and reporting test.

  python -m experiments.collect runs/sweep [--min_val_psnr=23]

Every ``metrics.json`` of a DFT, MFT, DFT+MFT or query-only DFT run below DIR is
read; seeds of one run form one row (mean +- std). For each method, source and
target the row with the best mean validation accuracy is selected (among the rows
with the most seeds and a mean validation PSNR of at least ``--min_val_psnr``);
its test accuracy is the result to report. Writes DIR/collect.md and DIR/collect.csv.
A sweep's runs that have not finished (from DIR/sweep.json) are listed below the
table, failed ones with their last error line.
"""
from absl import app, flags

from dfm.studies.collect import collect
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app


def main() -> None:
  """Defines the flags and collects the folder given as the argument."""
  min_val_psnr = flags.DEFINE_float("min_val_psnr", 0.0,
                                    "Select only rows whose mean val PSNR is at least this (dB).")

  def work(argv: list[str]) -> None:
    if len(argv) != 2:
      raise app.UsageError("Usage: python -m experiments.collect DIR [--min_val_psnr=DB]")
    quiet_library_logs()
    print(exit_on_bad_input(lambda: collect(argv[1], min_val_psnr=min_val_psnr.value)))

  run_app(work)


if __name__ == "__main__":
  main()
