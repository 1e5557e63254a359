"""SLURM sweeps through submitit: one job array for every point x seed, requeued on
preemption, each task the same :func:`dfm.studies.sweep.run_point` as a run here.

:func:`submit` skips runs that are done, queued or running (from the sweep's
manifest and the scheduler) and submits the rest, failed and missing ones
included, as one job array; so rerunning the same sweep command resubmits only
what needs it. submitit's files (the sbatch script, each task's pickled call, its
stdout/stderr log and result) go to ``ROOT/.submitit``: one flat folder, as SLURM
before 23.02 does not create a missing log folder (per-job ``%j`` folders are made
only after ``sbatch`` returns). The jobs are recorded in ``ROOT/sweep.json``
(:mod:`dfm.studies.manifest`).

Example::

  runs = sweep.plan(config, Path("runs/s"), [{"dft.lam": 0.1}], seeds=2, experiment="dft")
  submit(runs, Path("runs/s"), experiment="dft", seeds=2,
         resources=Resources(partition="gpu", gpus_per_task=1))
"""
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import submitit

from dfm.studies import manifest
from dfm.studies.sweep import Run, entry, run_point

FOLDER = ".submitit"
# sacct's states of a job that is queued or running (the rest have ended).
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING",
          "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING")


class RunTask(submitit.helpers.Checkpointable):
  """One sweep run as a job: ``run_point(experiment, config, workdir, seeds=seeds)``.

  Before a timeout or on preemption, SLURM signals the job (``--signal``) and
  submitit calls ``checkpoint(*args)``, which (``Checkpointable``'s) returns a
  ``DelayedSubmission`` of this same task and arguments; submitit requeues the job
  with it, and the rerun resumes from the run's own orbax checkpoint (a dfm run
  started again on its workdir resumes; a finished one is skipped).
  """

  def __call__(self, experiment: str, config: Any, workdir: str, seeds: int) -> None:
    run_point(experiment, config, Path(workdir), seeds=seeds)


@dataclasses.dataclass(frozen=True)
class Resources:
  """What each array task asks SLURM for (0 or '': the cluster's default)."""
  partition: str = ""
  gpus_per_task: int = 0
  cpus_per_task: int = 0
  mem_gb: float = 0.0
  timeout_min: int = 60
  array_parallelism: int = 64  # Tasks of the array running at once (sbatch --array=0-N%P).
  sbatch: tuple[str, ...] = ()  # Extra #SBATCH options as KEY=VALUE, e.g. "account=abc".


def sbatch_options(options: tuple[str, ...]) -> dict[str, Any]:
  """``("account=abc", "exclusive")`` -> ``{"account": "abc", "exclusive": True}``:
  extra ``#SBATCH --KEY=VALUE`` lines (a bare KEY is a flag)."""
  parsed: dict[str, Any] = {}
  for option in options:
    key, sep, value = option.partition("=")
    if not key.strip() or key.startswith("-") or (sep and not value):
      raise ValueError(f"--slurm.sbatch={option!r} is not KEY=VALUE or KEY; write e.g. "
                       "--slurm.sbatch=account=abc --slurm.sbatch=constraint=a100.")
    parsed[key.strip()] = value.strip() if sep else True
  return parsed


def executor(root: Path, resources: Resources, *, name: str,
             cluster: str = "slurm") -> submitit.AutoExecutor:
  """submitit's executor for the sweep in ``root`` (``cluster="local"``: its local
  executor, real processes on this machine, which ignores the SLURM resources)."""
  for field in ("gpus_per_task", "cpus_per_task", "mem_gb"):
    if getattr(resources, field) < 0:
      raise ValueError(f"--slurm.{field} must be >= 0 (0: the cluster's default).")
  for field in ("timeout_min", "array_parallelism"):
    if getattr(resources, field) < 1:
      raise ValueError(f"--slurm.{field} must be a positive integer.")
  if cluster == "slurm" and not shutil.which("srun"):
    raise ValueError("--launcher=slurm: no srun on this machine's PATH; run the sweep on a "
                     "SLURM login node, or use --launcher=local.")
  slurm = {"slurm_partition": resources.partition or None,
           "slurm_gpus_per_task": resources.gpus_per_task or None,
           "slurm_array_parallelism": resources.array_parallelism,
           # --ntasks: Slurm refuses --gpus-per-task without a task count (seen on 23.11);
           # --requeue: requeueing allowed whatever the cluster's JobRequeue default.
           "slurm_additional_parameters": {"ntasks": 1, "requeue": True,
                                           **sbatch_options(resources.sbatch)}}
  generic = {"cpus_per_task": resources.cpus_per_task or None,
             "mem_gb": resources.mem_gb or None}
  found = submitit.AutoExecutor(folder=Path(root) / FOLDER, cluster=cluster)
  found.update_parameters(name=name, timeout_min=resources.timeout_min,
                          **{k: v for k, v in {**slurm, **generic}.items() if v is not None})
  return found


def _alive(pid: str) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  return True


def job_states(jobs: list[dict[str, Any]], root: Path) -> list[str]:
  """``running``, ``failed`` or ``missing`` of each job that has neither finished its
  run nor left an error (:data:`dfm.studies.manifest.JobStates`): one ``sacct`` call
  for SLURM jobs; a process check for the local executor's (its job ids are pids)."""
  del root  # The job ids say it all.
  watcher = submitit.SlurmJob.watcher
  slurm_ids = [job["id"] for job in jobs if job["cluster"] == "slurm"]
  for job_id in slurm_ids:
    watcher.register_job(job_id)
  if slurm_ids:
    watcher.update()
  states = []
  for job in jobs:
    if job["cluster"] == "local":
      states.append("running" if _alive(job["id"]) else "failed")
      continue
    state = watcher.get_state(job["id"], mode="cache").split(" ")[0]
    # UNKNOWN: sacct has no record (never started, or purged).
    states.append("missing" if state == "UNKNOWN" else "running" if state in ACTIVE else "failed")
  return states


def _job(job: submitit.Job, root: Path, cluster: str) -> dict[str, str]:
  """A submitted job as the manifest records it."""
  return {"cluster": cluster, "id": job.job_id,
          "log": str(job.paths.stderr.relative_to(root)),
          "result": str(job.paths.result_pickle.relative_to(root))}


def submit(runs: list[Run], root: Path, *, experiment: str, seeds: int, resources: Resources,
           cluster: str = "slurm") -> list[submitit.Job]:
  """Submits the runs that are neither done nor queued nor running as one job array;
  records them in the manifest and returns their jobs."""
  root = Path(root).absolute()
  array = executor(root, resources, name=f"dfm-{experiment}", cluster=cluster)
  known = {}
  if manifest.read(root) is not None:
    known = {name: state for name, state, _, _ in manifest.status(root, job_states)}
  todo = [run for run in runs if not manifest.finished(run.workdir)
          and known.get(str(run.workdir.relative_to(root))) != "running"]
  print(f"{len(runs) - len(todo)} of {len(runs)} runs are done, queued or running: skipped.",
        flush=True)
  if not todo:
    return []
  jobs = array.map_array(RunTask(), [experiment] * len(todo), [run.config for run in todo],
                        [str(run.workdir) for run in todo], [seeds] * len(todo))
  manifest.record(root, [entry(run, _job(job, root, cluster)) for run, job in zip(todo, jobs)],
                  experiment=experiment, seeds=seeds, launcher="slurm")
  print(f"Submitted {len(jobs)} runs ({cluster} jobs {jobs[0].job_id} ... {jobs[-1].job_id}); "
        f"logs in {root / FOLDER}. Status: python -m experiments.sweep --workdir={root} --status",
        flush=True)
  return jobs
