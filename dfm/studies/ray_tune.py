r"""Sweeps on a Ray cluster through Ray Tune: one trial per point and seed.

  python -m experiments.sweep --launcher=ray --config=configs/paper/inter.py:mnist5k-uci_digits \
      --workdir=runs/sweep --config.classifier_dir=runs/mnist5k --grid='dft.lam=0.01,0.1,1' \
      --ray.address=auto --ray.gpus_per_trial=0.25 --ray.scheduler=asha

Each trial is exactly a local run (:func:`dfm.studies.sweep.run_point`) in the
run's own workdir, so it resumes from its checkpoint and a finished one is
skipped. It reports every record the run logs that has ``val_accuracy``
(:mod:`dfm.run.progress`), so ``--ray.scheduler=asha`` stops the points that fall
behind after ``grace_period`` reports; a stopped run keeps its checkpoint and has
no ``metrics.json``, so ``collect`` does not count it. ``--ray.search=optuna``
lets Optuna's TPE sample ``--ray.space`` (``KEY=uniform(LOW,HIGH)`` or
``loguniform``, ``;`` between keys) for ``--ray.num_samples`` trials, on top of a
grid point it picks. The metric is validation accuracy, maximised; test is never
seen. Tune's own records go to ``WORKDIR/.ray``.
"""
import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections

from dfm.run import progress
from dfm.studies import manifest
from dfm.studies.sweep import Run, convert, plan, point_name, run_point

METRIC = "val_accuracy"
# Every trial's environment: JAX allocates GPU memory as it needs it, so several
# trials (--ray.gpus_per_trial below 1) share a GPU.
TRIAL_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
SCHEDULERS = ("fifo", "asha")
SEARCHES = ("", "optuna")
# ASHA stops a trial at max_t reports; the run's own schedule ends it long before.
ASHA_MAX_REPORTS = 10**6
_RANGE = re.compile(r"(uniform|loguniform)\(([^,()]+),([^,()]+)\)")


def ray_options() -> ml_collections.ConfigDict:
  """The ``--ray.*`` options and their defaults, for
  ``config_flags.DEFINE_config_dict("ray", ray_options())``."""
  return ml_collections.ConfigDict({
      "address": "",  # "": start Ray here; "auto" or "HOST:PORT": join that cluster.
      "cpus_per_trial": 1.0,
      "gpus_per_trial": 0.0,  # Fractions share a GPU, e.g. 0.25: four trials per GPU.
      "scheduler": "fifo",  # asha: stop points that fall behind on val accuracy.
      "grace_period": 1,  # ASHA: reports every trial gets before it may be stopped.
      "reduction_factor": 2,  # ASHA: keep the best 1/reduction_factor at each rung.
      "search": "",  # "": the grid; optuna: TPE over --ray.space.
      "space": "",  # KEY=uniform(LOW,HIGH) or loguniform(LOW,HIGH), ';' between keys.
      "num_samples": 8,  # Trials of a search.
      "max_concurrent_trials": 0,  # 0: as many as the resources allow.
      "max_failures": 0,  # Retries of a failed trial (each resumes from its checkpoint).
  })


def parse_space(text: str, config: ml_collections.ConfigDict) -> dict[str, tuple[str, float, float]]:
  """``"dft.lr=loguniform(1e-3,1e-1)"`` -> ``{"dft.lr": ("loguniform", 0.001, 0.1)}``;
  each key must be a float field of ``config``."""
  space = {}
  for spec in filter(None, (part.strip() for part in text.split(";"))):
    key, _, value = (part.strip() for part in spec.partition("="))
    match = _RANGE.fullmatch(value.replace(" ", ""))
    if not match:
      raise ValueError(f"--ray.space {spec!r} is not KEY=uniform(LOW,HIGH) or "
                       "KEY=loguniform(LOW,HIGH) (e.g. 'dft.lr=loguniform(1e-3,1e-1)').")
    kind, low, high = match[1], *(convert(config, key, bound) for bound in match.groups()[1:])
    if not isinstance(low, float) or not low < high or (kind == "loguniform" and low <= 0):
      raise ValueError(f"--ray.space {spec!r}: needs a float field and 0 < LOW < HIGH "
                       "(LOW < HIGH for uniform).")
    space[key] = (kind, low, high)
  return space


def _check(options: ml_collections.ConfigDict, runs: list[Run], seeds: int,
           experiment: str) -> None:
  if options.scheduler not in SCHEDULERS or options.search not in SEARCHES:
    raise ValueError(f"--ray.scheduler={options.scheduler!r}, --ray.search={options.search!r}: "
                     f"use one of {SCHEDULERS} and one of {SEARCHES}.")
  if bool(options.search) != bool(options.space):
    raise ValueError("--ray.search=optuna and --ray.space go together: give both or neither.")
  if min(options.grace_period, options.num_samples) < 1 or options.reduction_factor < 2:
    raise ValueError("--ray.grace_period and --ray.num_samples must be at least 1, "
                     "--ray.reduction_factor at least 2.")
  if experiment == "compare" and (options.search or options.scheduler != "fifo"):
    raise ValueError("A compare reports each method's phases in turn, which ASHA or a search "
                     "cannot rank: sweep --experiment=dft (mft, dft_mft) for those.")
  if options.search and seeds > 1:
    raise ValueError("--ray.search samples one seed per trial; drop --seeds.")
  if not runs:
    raise ValueError("The sweep holds no run.")


def _sampled(run: Run, values: dict[str, float], root: Path, experiment: str) -> Run:
  """The run of a search's trial: ``run``'s point plus the sampled ``values``
  (6 significant digits, the text of the folder and of the config), checked."""
  point, _, _, config = run
  merged = {**point, **{key: f"{value:.6g}" for key, value in values.items()}}
  [sampled] = plan(config, root, [merged], seeds=1, experiment=experiment)
  return sampled


def _finished_accuracy(workdir: Path) -> float | None:
  """A finished fine-tuning run's validation accuracy (``metrics.json``), if any."""
  path = workdir / "metrics.json"
  results = json.loads(path.read_text()) if path.is_file() else {}
  return results.get("val", {}).get("after", {}).get("accuracy")


def trial_table(runs: list[Run]) -> dict[str, Run]:
  """The runs by the name a trial gets, e.g. ``dft.lam=0.1/seed0``."""
  return {f"{point_name(point)}/seed{seed}": (point, seed, workdir, config)
          for point, seed, workdir, config in runs}


def trial(params: dict[str, Any], *, table: dict[str, Run], root: Path, experiment: str,
          seeds: int, launch_dir: Path) -> None:
  """One Tune trial: ``params["run"]`` names a run of ``table`` (alone: the only
  one); any other key is a sampled value. Runs it as a local run would, from
  ``launch_dir`` (relative paths in configs), reporting its log's ``val_accuracy``."""
  from ray import tune  # pylint: disable=import-outside-toplevel
  os.chdir(launch_dir)  # Tune starts a trial in its own folder.
  run = table[params.get("run", next(iter(table)))]
  values = {key: value for key, value in params.items() if key != "run"}
  point, _, workdir, config = _sampled(run, values, root, experiment) if values else run
  reported = []

  def listen(record: dict[str, Any]) -> None:
    if METRIC in record:
      reported.append(record)
      tune.report({**record, "run": point_name(point)})

  with progress.reporting(listen):
    run_point(experiment, config, workdir, seeds=seeds)
  accuracy = _finished_accuracy(workdir)
  if not reported and accuracy is not None:  # Finished already: its result, once.
    tune.report({METRIC: accuracy, "run": point_name(point)})


def _import_ray() -> Any:
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("--launcher=ray needs Ray Tune and Optuna: pip install -e '.[cluster]'.") \
        from None
  return ray


def init_ray(address: str = "", **kwargs: Any) -> None:
  """Starts Ray here (``address`` ``""``) or joins the cluster at ``address``, with
  :data:`TRIAL_ENV` (and ``kwargs``' ``runtime_env`` variables) in every worker."""
  runtime_env = dict(kwargs.pop("runtime_env", {}))
  runtime_env["env_vars"] = {**TRIAL_ENV, **runtime_env.get("env_vars", {})}
  _import_ray().init(address=address or None, runtime_env=runtime_env, **kwargs)


@contextlib.contextmanager
def _connected(address: str) -> Iterator[None]:
  """Ray as the caller set it up, else :func:`init_ray` for the ``with`` only."""
  ray = _import_ray()
  if ray.is_initialized():
    yield
    return
  init_ray(address)
  try:
    yield
  finally:
    ray.shutdown()


def _tune_config(options: ml_collections.ConfigDict, table: dict[str, Run],
                 space: dict[str, tuple[str, float, float]], seed: int) -> tuple[dict, Any]:
  """``(param_space, TuneConfig)`` of the grid, or of the search over ``space``."""
  from ray import tune  # pylint: disable=import-outside-toplevel
  from ray.tune.schedulers import ASHAScheduler  # pylint: disable=import-outside-toplevel
  scheduler = None
  if options.scheduler == "asha":
    scheduler = ASHAScheduler(max_t=ASHA_MAX_REPORTS, grace_period=options.grace_period,
                              reduction_factor=options.reduction_factor)
  settings = {"metric": METRIC, "mode": "max", "scheduler": scheduler, "reuse_actors": True,
              "max_concurrent_trials": options.max_concurrent_trials or None}
  if not options.search:
    return {"run": tune.grid_search(list(table))}, tune.TuneConfig(**settings)
  import optuna  # pylint: disable=import-outside-toplevel
  from ray.tune.search.optuna import OptunaSearch  # pylint: disable=import-outside-toplevel
  param_space = {key: getattr(tune, kind)(low, high) for key, (kind, low, high) in space.items()}
  if len(table) > 1:
    param_space["run"] = tune.choice(list(table))
  return param_space, tune.TuneConfig(
      **settings, num_samples=options.num_samples,
      search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed)))


class Trial(NamedTuple):
  """What one trial did: its run's ``workdir``, the ``val_accuracy`` of each report,
  whether the run ``finished`` (``False``: stopped early by the scheduler, or
  failed) and the last line of its ``error``, if any."""
  workdir: Path
  val_accuracy: list[float]
  finished: bool
  error: str | None

  def line(self) -> str:
    """E.g. ``stopped  runs/s/dft.lr=100/seed0 (1 report, last val accuracy 0.1028)``."""
    status = "failed" if self.error else "finished" if self.finished else "stopped"
    curve = self.val_accuracy
    last = f", last val accuracy {curve[-1]:.4g}" if curve else ""
    return f"{status:8} {self.workdir} ({len(curve)} report{'s' * (len(curve) != 1)}{last})"


def _outcome(result: Any, table: dict[str, Run], root: Path, experiment: str) -> Trial:
  params = dict(result.config)
  run = table[params.pop("run", next(iter(table)))]
  workdir = _sampled(run, params, root, experiment)[2] if params else run[2]
  frame = result.metrics_dataframe
  curve = [] if frame is None or METRIC not in frame else frame[METRIC].dropna().tolist()
  error = None if result.error is None else (str(result.error).strip().splitlines() or ["?"])[-1]
  return Trial(workdir, curve, manifest.finished(workdir), error)


def run_on_ray(runs: list[Run], *, root: Path, experiment: str, seeds: int,
               options: ml_collections.ConfigDict) -> list[Trial]:
  """Runs the sweep's checked ``runs`` ``(point, seed, workdir, config)`` as Tune
  trials on Ray (``options``: :func:`ray_options`); returns each trial's outcome.

  A trial per run (``options.search`` empty), or ``options.num_samples`` trials of
  Optuna's TPE over ``options.space`` added to one of the runs' points (its choice).
  Resources per trial: ``cpus_per_trial``, ``gpus_per_trial``. Tune's records go to
  ``root/.ray/<experiment>-<time>``; the runs to their own workdirs below ``root``.

  Raises:
    ValueError: bad options, or Ray is not installed.
    RuntimeError: some trials failed (after every trial ended); their workdirs keep
      their checkpoints, so the same command resumes them.

  Example::

    runs = plan(base, root, points(parse_grid(["dft.lam=0.01,0.1"])), seeds=1, experiment="dft")
    run_on_ray(runs, root=root, experiment="dft", seeds=1, options=ray_options())
  """
  _check(options, runs, seeds, experiment)
  root = Path(root).absolute()
  space = parse_space(options.space, runs[0][3])
  if overlap := set(space) & set(runs[0][0]):
    raise ValueError(f"{sorted(overlap)} in both --grid and --ray.space: keep each key in one.")
  table = trial_table(runs)
  with _connected(options.address):
    from ray import tune  # pylint: disable=import-outside-toplevel
    trainable = tune.with_resources(
        tune.with_parameters(trial, table=table, root=root, experiment=experiment, seeds=seeds,
                             launch_dir=Path.cwd()),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    param_space, tune_config = _tune_config(options, table, space, runs[0][3].seed)
    storage = root / ".ray"
    results = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(
            storage_path=str(storage), name=f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=1)).fit()
  trials = [_outcome(result, table, root, experiment) for result in results]
  print(f"{len(trials)} trials; Tune's records: {storage}", *(t.line() for t in trials), sep="\n")
  failed = [t for t in trials if t.error is not None]
  if failed:
    raise RuntimeError(f"{len(failed)} of {len(trials)} trials failed, e.g. {failed[0].workdir}: "
                       f"{failed[0].error} (Tune's records: {storage}); the same command resumes "
                       "them.")
  return trials
