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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from dfm.studies import manifest, ray_tune
from dfm.studies.sweep import EXPERIMENTS, base_overrides, config_sweep, entry, run_here, sweep
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

CLUSTER_EXTRA = "--launcher=slurm needs submitit: pip install -e '.[cluster]'."


def _slurm_module():
  """dfm.studies.slurm, imported only when used: submitit is an optional extra."""
  try:
    from dfm.studies import slurm  # pylint: disable=import-outside-toplevel
  except ModuleNotFoundError as error:
    raise ValueError(CLUSTER_EXTRA) from error
  return slurm


def _ray_launcher(options: Any) -> Callable[..., Any]:
  """The ``ray`` launcher: the runs as Ray Tune trials (``--ray.*`` options)."""
  def launch(runs, root, *, experiment, seeds):
    if not options.search:
      manifest.record(root, [entry(run) for run in runs], experiment=experiment, seeds=seeds,
                      launcher="ray")
    return ray_tune.run_on_ray(runs, root=root, experiment=experiment, seeds=seeds,
                               options=options)
  return launch


def _resource_flags() -> Callable[[], Any]:
  """Defines the ``--slurm.*`` flags; returns what reads them as ``slurm.Resources``."""
  defined = {
      "partition": flags.DEFINE_string("slurm.partition", "", "SLURM partition ('': default)."),
      "gpus_per_task": flags.DEFINE_integer("slurm.gpus_per_task", 0, "GPUs per run."),
      "cpus_per_task": flags.DEFINE_integer("slurm.cpus_per_task", 0, "CPUs per run (0: default)."),
      "mem_gb": flags.DEFINE_float("slurm.mem_gb", 0, "Memory per run in GB (0: default)."),
      "timeout_min": flags.DEFINE_integer("slurm.timeout_min", 60, "Time limit of a run, minutes "
                                          "(near it, the run is requeued and resumes)."),
      "array_parallelism": flags.DEFINE_integer("slurm.array_parallelism", 64,
                                                "Runs of the job array running at once."),
      "sbatch": flags.DEFINE_multi_string("slurm.sbatch", [], "Extra #SBATCH option KEY=VALUE "
                                          "(or KEY), e.g. account=abc; repeat for more."),
  }
  return lambda: _slurm_module().Resources(
      **{name: tuple(flag.value) if name == "sbatch" else flag.value
         for name, flag in defined.items()})


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
  launcher = flags.DEFINE_enum("launcher", "local", ["local", "slurm", "ray"],
                               "Run here one after another, submit one SLURM job array, or "
                               "run Ray Tune trials.")
  ray = config_flags.DEFINE_config_dict("ray", ray_tune.ray_options(), "--launcher=ray: the cluster "
                                        "(address), resources per trial, scheduler, search.")
  status = flags.DEFINE_bool("status", False, "List the sweep's runs in --workdir: done, "
                             "failed (last error line), running, missing; run nothing.")
  print_commands = flags.DEFINE_bool("print_commands", False,
                                     "Print one command per run instead of running.")
  resources = _resource_flags()
  flags.mark_flags_as_required(["workdir"])

  def launchers() -> dict[str, Callable[..., Any]]:
    """Launcher name -> function of the checked runs (and the sweep's root)."""
    def slurm_launcher(runs, root, **kwargs):
      return _slurm_module().submit(runs, root, resources=resources(), **kwargs)
    return {"local": run_here, "slurm": slurm_launcher, "ray": _ray_launcher(ray.value)}

  def report() -> str:
    found = manifest.read(Path(workdir.value))
    launched = {entry["launcher"] for entry in (found or {"runs": {}})["runs"].values()}
    job_states = _slurm_module().job_states if "slurm" in launched else None
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
        launch=launchers()[launcher.value], print_commands=print_commands.value,
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
