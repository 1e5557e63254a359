r"""Hyperparameter sweeps: a grid of config overrides, one workdir per point and seed.

  python -m experiments.sweep --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/sweep --experiment=dft --config.classifier_dir=runs/mnist5k \
      --grid='dft.lam=0.01,0.1,1' --grid='dft.lr=1e-3,1e-2' --seeds=3

Each point is the product of one value per ``--grid``; its runs go to
``DIR/<key=value,...>/seed<s>`` (``--experiment=compare`` handles its seeds itself
and gets ``DIR/<key=value,...>``). Run here, finished points are skipped and
interrupted ones resume. With ``--print_commands`` nothing runs: one command line
per point and seed is printed, to hand to a cluster scheduler. Then
``python -m experiments.collect DIR`` selects on validation and reports test.
"""
from absl import app, flags
from ml_collections import config_flags

from dfm.studies.sweep import EXPERIMENTS, base_overrides, sweep
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app


def main() -> None:
  """Defines the flags and runs the sweep they describe."""
  config = config_flags.DEFINE_config_file("config", None, "Base config of every point.",
                                           lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory of the sweep: one subfolder per point.")
  grid = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,...: values of one config field.")
  seeds = flags.DEFINE_integer("seeds", 1, "Seeds per point, from config.seed up.")
  experiment = flags.DEFINE_enum("experiment", "dft", list(EXPERIMENTS), "What each point runs.")
  print_commands = flags.DEFINE_bool("print_commands", False,
                                     "Print one command per run instead of running.")
  flags.mark_flags_as_required(["config", "workdir"])

  def work(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    exit_on_bad_input(lambda: sweep(
        config.value, workdir.value, grid.value, seeds=seeds.value, experiment=experiment.value,
        print_commands=print_commands.value,
        config_arg=config_flags.get_config_filename(flags.FLAGS["config"]),
        overrides=base_overrides(config_flags.get_override_values(flags.FLAGS["config"]))))

  run_app(work)


if __name__ == "__main__":
  main()
