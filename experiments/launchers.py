"""``--launcher=local|slurm|ray`` and their options, for every entrypoint that runs many runs.

:func:`define_launcher_flags` defines ``--launcher``, ``--slurm.*`` and ``--ray.*``
and returns what reads them: a launcher ``launch(runs, root, *, experiment, seeds)``
of :mod:`dfm.studies.sweep` (local), :mod:`dfm.studies.slurm` (a SLURM job array
through submitit) or :mod:`dfm.studies.ray_tune` (Ray Tune trials).

Example::

  launcher, chosen = define_launcher_flags()   # at flag definition time
  chosen()(runs, root, experiment="dft", seeds=1)   # after the flags are parsed
"""
from collections.abc import Callable
from typing import Any

from absl import flags
from ml_collections import config_flags

from dfm.studies import manifest, ray_tune
from dfm.studies.sweep import entry, run_here

CLUSTER_EXTRA = "--launcher=slurm needs submitit: pip install -e '.[cluster]'."
LAUNCHERS = ("local", "slurm", "ray")


def slurm_module():
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
  return lambda: slurm_module().Resources(
      **{name: tuple(flag.value) if name == "sbatch" else flag.value
         for name, flag in defined.items()})


def define_launcher_flags() -> tuple[flags.FlagHolder, Callable[[], Callable[..., Any]]]:
  """Defines ``--launcher``, ``--slurm.*``, ``--ray.*``; returns the ``--launcher`` flag
  and a function giving the chosen launcher once the flags are parsed."""
  launcher = flags.DEFINE_enum("launcher", "local", list(LAUNCHERS),
                               "Run here one after another, submit one SLURM job array, or "
                               "run Ray Tune trials.")
  ray = config_flags.DEFINE_config_dict("ray", ray_tune.ray_options(), "--launcher=ray: the cluster "
                                        "(address), resources per trial, scheduler, search.")
  resources = _resource_flags()

  def chosen() -> Callable[..., Any]:
    if launcher.value == "slurm":
      return lambda runs, root, **kwargs: slurm_module().submit(runs, root,
                                                                resources=resources(), **kwargs)
    return _ray_launcher(ray.value) if launcher.value == "ray" else run_here

  return launcher, chosen
