"""Hyperparameter sweeps: a grid of config overrides, one workdir per point and seed.

A grid is ``--grid``-style text, ``["dft.lam=0.01,0.1", "dft.lr=1e-3"]``; each point
takes one value per key (tuples keep their commas). :func:`sweep` checks every
point's config before anything runs, then runs each point and seed in
``ROOT/<key=value,...>/seed<s>`` (a ``compare`` point handles its seeds itself),
skipping finished runs, or prints one shell command per run for a scheduler.

Example::

  sweep(config, "runs/sweep", ["dft.lam=0.01,0.1"], seeds=3, experiment="dft")
"""
import ast
import importlib.util
import itertools
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import ml_collections

from dfm.run.checks import check_schedule
from dfm.run.methods import METHODS
from dfm.run.query_dft import query_dft
from dfm.run.workdir import run_once
from dfm.studies import compare, manifest

EXPERIMENTS = {**METHODS, "compare": compare.run, "query_dft": query_dft}
# The config sections each experiment runs, checked for every point before any runs.
SECTIONS = {"train_classifier": ("train",), "dft": ("dft",), "mft": ("mft",),
            "dft_mft": ("dft_mft",), "probe": ("probe",), "compare": ("train", "dft_mft"),
            "query_dft": ("dft",)}


def split_values(text: str) -> list[str]:
  """Splits on the commas outside brackets: ``"(14,14,1),(7,7,1)"`` -> two tuples' text."""
  values, depth, current = [], 0, ""
  for char in text:
    depth += (char in "([") - (char in ")]")
    if char == "," and depth == 0:
      values.append(current)
      current = ""
    else:
      current += char
  return [v.strip() for v in [*values, current] if v.strip()]


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
  """``["dft.lam=0.01,0.1"]`` -> ``[("dft.lam", ["0.01", "0.1"])]``; tuples keep their
  commas: ``"dft.noise_shape=(14,14,1),(7,7,1)"``."""
  grid = []
  for spec in specs:
    key, sep, values = spec.partition("=")
    if not sep or not key or not values:
      raise ValueError(f"--grid={spec!r} is not KEY=V1,V2,... (e.g. --grid='dft.lam=0.01,0.1').")
    grid.append((key.strip(), split_values(values)))
  return grid


def convert(config: ml_collections.ConfigDict, key: str, text: Any) -> Any:
  """``text`` as the type of the config field ``key`` (which must exist); a value that
  is not text (from a declared sweep) is kept as it is."""
  parent, _, leaf = key.rpartition(".")
  node = config
  for part in filter(None, parent.split(".")):
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise ValueError(f"--grid key {key!r}: the config has no section {part!r}.")
    node = node[part]
  if leaf not in node:
    raise ValueError(f"--grid key {key!r} is not in the config; fields there: "
                     f"{sorted(node.keys())}.")
  current = node[leaf]
  if not isinstance(text, str):
    return text
  if isinstance(current, bool):
    if text.lower() not in ("true", "false"):
      raise ValueError(f"--grid {key}={text!r}: expected true or false.")
    return text.lower() == "true"
  if isinstance(current, (int, float, str)):
    try:
      return type(current)(text)
    except ValueError as error:
      raise ValueError(f"--grid {key}={text!r}: expected a {type(current).__name__}.") from error
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError) as error:
    raise ValueError(f"--grid {key}={text!r}: expected a Python literal like the field's "
                     f"current value {current!r}, e.g. '(14,14,1)'.") from error


def points(grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
  """Every combination of one value per key, in the grid's order."""
  keys = [key for key, _ in grid]
  return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def declared_points(declare: Callable[[Callable[..., None]], None]) -> list[dict[str, Any]]:
  """The points a config file's ``sweep(add)`` declares: one per ``add`` call.

  ``add`` takes the point's config fields as a dict, ``add({"dft.lam": 0.01})``, or
  as keywords, ``add(**{"dft.lam": 0.01})``; values are typed (a tuple for a tuple
  field) or ``--grid``-style text.

  Example::

    def declare(add):
      for lam in (0.01, 0.1):
        add({"dft.lam": lam, "dft.lr": 0.3})
    declared_points(declare)  # [{"dft.lam": 0.01, "dft.lr": 0.3}, {"dft.lam": 0.1, ...}]
  """
  declared: list[dict[str, Any]] = []

  def add(values: dict[str, Any] | None = None, /, **more: Any) -> None:
    declared.append({**(values or {}), **more})

  declare(add)
  if not declared or not all(declared):
    raise ValueError("The config file's sweep(add) declared no point or an empty one; call "
                     "add({'dft.lam': 0.01, ...}) once per point.")
  return declared


def config_sweep(config_arg: str) -> list[dict[str, Any]]:
  """The points declared by ``sweep(add)`` in the config file of ``config_arg``
  (``file.py[:arg]``, as ``--config`` takes it)."""
  path = config_arg.partition(":")[0]
  spec = importlib.util.spec_from_file_location("dfm_declared_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, "sweep", None)):
    raise ValueError(f"--sweep: {path} defines no sweep(add) function; add one (configs/digits.py "
                     "has an example) or give the points with --grid.")
  return declared_points(module.sweep)


def sweep_points(grid_specs: list[str], declared: list[dict[str, Any]] | None = None
                 ) -> list[dict[str, Any]]:
  """The points of ``--grid`` and, if given, of a declared sweep: every declared point
  with every grid point (their product), a key in both refused."""
  grid = parse_grid(grid_specs)
  if declared is None:
    return points(grid)
  shared = sorted({key for point in declared for key in point} & {key for key, _ in grid})
  if shared:
    raise ValueError(f"{shared} is both in the config's sweep(add) and in --grid; give each "
                     "field in one place.")
  return [{**point, **extra} for point in declared for extra in points(grid)]


def value_text(value: Any) -> str:
  """A point's value as a folder name and ``--config.KEY=`` value: text as it is,
  tuples without spaces, e.g. ``(7,7,1)``."""
  return value if isinstance(value, str) else repr(value).replace(" ", "")


def point_name(point: dict[str, Any]) -> str:
  """The point's folder name, e.g. ``dft.lam=0.01,dft.lr=0.001`` (``base``: no grid)."""
  return ",".join(f"{k}={value_text(v)}" for k, v in point.items()) or "base"


def configured(base: ml_collections.ConfigDict, point: dict[str, Any],
               seed: int) -> ml_collections.ConfigDict:
  """A locked copy of ``base`` with the point's values and ``seed``."""
  config = ml_collections.ConfigDict(base.to_dict())
  try:
    config.update_from_flattened_dict({key: convert(base, key, v) for key, v in point.items()})
  except TypeError as error:  # A declared value of the wrong type.
    raise ValueError(f"Point {point_name(point)}: {error}") from error
  config.seed = seed
  config.lock()
  return config


class Run(NamedTuple):
  """One run of a sweep, its config checked: what every launcher takes."""
  point: dict[str, Any]  # Config field -> value (text from --grid, or typed).
  seed: int
  workdir: Path  # Absolute: ROOT/<point_name>/seed<s> (a compare point: ROOT/<point_name>).
  config: ml_collections.ConfigDict  # Locked: the base with the point and the seed.


def plan(base: ml_collections.ConfigDict, root: Path, points_: list[dict[str, Any]], *,
         seeds: int, experiment: str) -> list[Run]:
  """Every run of ``points_`` x seeds, each config checked (``SECTIONS``) before any runs."""
  if seeds < 1:
    raise ValueError(f"--seeds must be at least 1, got {seeds}.")
  seed_list = [base.seed] if experiment == "compare" else range(base.seed, base.seed + seeds)
  runs = []
  for point in points_:
    for seed in seed_list:
      workdir = root.absolute() / point_name(point)
      config = configured(base, point, seed)
      for section in SECTIONS[experiment]:
        check_schedule(config, section)
      runs.append(Run(point, seed, workdir if experiment == "compare" else
                      workdir / f"seed{seed}", config))
  return runs


def command(experiment: str, point: dict[str, Any], seed: int, workdir: Path, *, seeds: int,
            config_arg: str, overrides: dict[str, Any]) -> str:
  """The shell command of one run: base config and overrides, the point's, the seed."""
  parts = ["python", "-m", f"experiments.{experiment}", f"--config={config_arg}"]
  parts += [f"--config.{k}={v}" for k, v in overrides.items() if k not in point]
  parts += [f"--config.{k}={value_text(v)}" for k, v in point.items()]
  parts += [f"--config.seed={seed}", f"--workdir={workdir}"]
  if experiment == "compare":
    parts.append(f"--seeds={seeds}")
  return shlex.join(parts)


def run_point(experiment: str, config: ml_collections.ConfigDict, workdir: Path, *,
              seeds: int) -> None:
  """Runs one sweep run here: the function every launcher calls for one point and seed
  (a ``compare`` point runs its ``seeds`` itself, its classifiers in
  ``ROOT/classifiers/``, shared by the points that differ only in dft/mft settings). A
  finished run is skipped, an interrupted one resumes from its checkpoint.

  Example::

    run_point("dft", configured(base, {"dft.lam": "0.1"}, 0), Path("runs/s/p/seed0"), seeds=1)
  """
  if experiment == "compare":  # Points that share a classifier config train it once.
    compare.run(config, str(workdir), seeds=seeds,
                shared_classifiers=workdir.parent / "classifiers")
  else:
    run_once(EXPERIMENTS[experiment], config, workdir)


def base_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
  """The ``--config.KEY=VALUE`` overrides a printed command repeats (not the seed)."""
  return {key: value for key, value in overrides.items() if key != "seed"}


def entry(run: Run, job: dict[str, Any] | None = None) -> tuple[Path, dict[str, str], int, Any]:
  """The run as :func:`dfm.studies.manifest.record` takes it (``job``: its submitted job)."""
  return run.workdir, {key: value_text(value) for key, value in run.point.items()}, run.seed, job


Launcher = Callable[..., Any]  # launcher(runs, root, *, experiment, seeds): runs or submits.


def run_here(runs: list[Run], root: Path, *, experiment: str, seeds: int) -> None:
  """The ``local`` launcher: runs one after another in this process (finished runs are
  skipped, an interrupted one resumes), recorded in the sweep's manifest first."""
  manifest.record(root, [entry(run) for run in runs], experiment=experiment, seeds=seeds,
                  launcher="local")
  for index, run in enumerate(runs, 1):
    print(f"[{index}/{len(runs)}] {point_name(run.point)} seed {run.seed}: {run.workdir}",
          flush=True)
    run_point(experiment, run.config, run.workdir, seeds=seeds)


def sweep(base: ml_collections.ConfigDict, root: str, grid_specs: list[str], *, seeds: int,
          experiment: str, declared: list[dict[str, Any]] | None = None,
          launch: Launcher = run_here, print_commands: bool = False, config_arg: str = "",
          overrides: dict[str, Any] | None = None) -> list[Path]:
  """Runs, submits (``launch``) or prints every point and seed; returns the runs' workdirs.

  The points are ``grid_specs``'s, times ``declared`` (a config's ``sweep(add)``) if
  given. ``config_arg`` (``file.py:arg``) and the flat ``overrides`` of the base
  config go into printed commands.
  """
  runs = plan(base, Path(root), sweep_points(grid_specs, declared), seeds=seeds,
              experiment=experiment)
  if print_commands:
    for run in runs:
      print(command(experiment, run.point, run.seed, run.workdir, seeds=seeds,
                    config_arg=config_arg, overrides=overrides or {}))
  else:
    launch(runs, Path(root).absolute(), experiment=experiment, seeds=seeds)
  return [run.workdir for run in runs]
