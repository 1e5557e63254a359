r"""Hyperparameter sweeps: a grid of config overrides, one workdir per point and seed.

  python -m experiments.sweep --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/sweep --experiment=dft --config.classifier_dir=runs/mnist5k \
      --grid='dft.lam=0.01,0.1,1' --grid='dft.lr=1e-3,1e-2' --seeds=3

Each point is the product of one value per ``--grid``; ``--sweep`` takes the points
the config file declares in its ``sweep(add)`` (``configs/digits.py`` has one), times
the ``--grid`` points if both are given. Its runs go to ``DIR/<key=value,...>/seed<s>``
(``--experiment=compare`` handles its seeds itself and gets ``DIR/<key=value,...>``).
``--launcher=local`` runs them here, skipping finished runs and resuming interrupted
ones; ``--launcher=slurm`` submits them as one SLURM job array through submitit
(``pip install -e '.[cluster]'``), with ``--slurm.*`` resources:

  python -m experiments.sweep --config=configs/digits.py:mnist5k_to_uci --sweep \
      --workdir=runs/sweep_digits --config.classifier_dir=runs/mnist5k --seeds=3 \
      --launcher=slurm --slurm.partition=gpu --slurm.gpus_per_task=1 --slurm.timeout_min=60
  python -m experiments.sweep --workdir=runs/sweep_digits --status

``--launcher=ray`` runs them as Ray Tune trials on ``--ray.address`` (default: a local
Ray), with ``--ray.*`` resources, an ASHA scheduler and Optuna's search
(:mod:`dfm.studies.ray_tune`).

``--status`` lists every run as done, failed (with its last error line), running or
missing. Rerunning the same sweep command launches only the failed and missing runs.
``DIR/sweep.json`` records what was launched. With ``--print_commands`` nothing runs:
one command line per point and seed is printed. Then ``python -m experiments.collect
DIR`` selects on validation and reports test.
"""
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from dfm.studies import manifest
from dfm.studies.sweep import EXPERIMENTS, base_overrides, config_sweep, sweep
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app
from experiments.launchers import define_launcher_flags, slurm_module


def main() -> None:
  """Defines the flags and runs, submits or reports the sweep they describe."""
  config = config_flags.DEFINE_config_file("config", None, "Base config of every point.",
                                           lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory of the sweep: one subfolder per point.")
  grid = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,...: values of one config field.")
  declared = flags.DEFINE_bool("sweep", False, "The points of the config file's sweep(add) "
                               "(times the --grid points).")
  seeds = flags.DEFINE_integer("seeds", 1, "Seeds per point, from config.seed up.")
  experiment = flags.DEFINE_enum("experiment", "dft", list(EXPERIMENTS), "What each point runs.")
  status = flags.DEFINE_bool("status", False, "List the sweep's runs in --workdir: done, "
                             "failed (last error line), running, missing; run nothing.")
  print_commands = flags.DEFINE_bool("print_commands", False,
                                     "Print one command per run instead of running.")
  launcher, chosen_launcher = define_launcher_flags()
  flags.mark_flags_as_required(["workdir"])

  def report() -> str:
    found = manifest.read(Path(workdir.value))
    launched = {entry["launcher"] for entry in (found or {"runs": {}})["runs"].values()}
    job_states = slurm_module().job_states if "slurm" in launched else None
    return manifest.status_text(Path(workdir.value), manifest.status(Path(workdir.value),
                                                                     job_states))

  def launch() -> list[Path]:
    if config.value is None:
      raise ValueError("--config is required to run a sweep (--status needs only --workdir).")
    if print_commands.value and launcher.value != "local":
      raise ValueError("--print_commands prints the runs instead of launching them; drop "
                       f"--launcher={launcher.value} or --print_commands.")
    config_file = config_flags.get_config_filename(flags.FLAGS["config"])
    return sweep(
        config.value, workdir.value, grid.value, seeds=seeds.value, experiment=experiment.value,
        declared=config_sweep(config_file) if declared.value else None,
        launch=chosen_launcher(), print_commands=print_commands.value,
        config_arg=config_file,
        overrides=base_overrides(config_flags.get_override_values(flags.FLAGS["config"])))

  def work(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    if status.value:
      print(exit_on_bad_input(report))
    else:
      exit_on_bad_input(launch)

  run_app(work)


if __name__ == "__main__":
  main()
