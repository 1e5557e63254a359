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
import itertools
import shlex
from pathlib import Path
from typing import Any

import ml_collections

from dfm.run.checks import check_schedule
from dfm.run.methods import METHODS
from dfm.run.query_dft import query_dft
from dfm.run.workdir import run_once
from dfm.studies import compare

EXPERIMENTS = {**METHODS, "compare": compare.run, "query_dft": query_dft}
# The config sections each experiment runs, checked for every point before any runs.
SECTIONS = {"train_classifier": ("train",), "dft": ("dft",), "mft": ("mft",),
            "dft_mft": ("dft_mft",), "compare": ("train", "dft_mft"), "query_dft": ("dft",)}


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


def convert(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
  """``text`` as the type of the config field ``key`` (which must exist)."""
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


def point_name(point: dict[str, str]) -> str:
  """The point's folder name, e.g. ``dft.lam=0.01,dft.lr=0.001`` (``base``: no grid)."""
  return ",".join(f"{k}={v}" for k, v in point.items()) or "base"


def configured(base: ml_collections.ConfigDict, point: dict[str, str],
               seed: int) -> ml_collections.ConfigDict:
  """A locked copy of ``base`` with the point's values and ``seed``."""
  config = ml_collections.ConfigDict(base.to_dict())
  config.update_from_flattened_dict({key: convert(base, key, text) for key, text in point.items()})
  config.seed = seed
  config.lock()
  return config


def runs_of(base: ml_collections.ConfigDict, grid: list[tuple[str, list[str]]], seeds: int,
            experiment: str, root: Path) -> list[tuple[dict, int, Path]]:
  """``(point, seed, workdir)`` of every run the sweep holds (``base``: the config,
  ``grid``: ``parse_grid``'s keys and values)."""
  seed_list = [base.seed] if experiment == "compare" else range(base.seed, base.seed + seeds)
  listed = []
  for point in points(grid):
    for seed in seed_list:
      workdir = root / point_name(point)
      listed.append((point, seed, workdir if experiment == "compare" else workdir / f"seed{seed}"))
  return listed


def command(experiment: str, point: dict[str, str], seed: int, workdir: Path, *, seeds: int,
            config_arg: str, overrides: dict[str, Any]) -> str:
  """The shell command of one run: base config and overrides, the point's, the seed."""
  parts = ["python", "-m", f"experiments.{experiment}", f"--config={config_arg}"]
  parts += [f"--config.{k}={v}" for k, v in overrides.items() if k not in point]
  parts += [f"--config.{k}={v}" for k, v in point.items()]
  parts += [f"--config.seed={seed}", f"--workdir={workdir}"]
  if experiment == "compare":
    parts.append(f"--seeds={seeds}")
  return shlex.join(parts)


def run_point(experiment: str, config: ml_collections.ConfigDict, workdir: Path, *,
              seeds: int) -> None:
  """Runs one sweep run here: the function every launcher calls for one point and seed
  (a ``compare`` point runs its ``seeds`` itself). A finished run is skipped, an
  interrupted one resumes from its checkpoint.

  Example::

    run_point("dft", configured(base, {"dft.lam": "0.1"}, 0), Path("runs/s/p/seed0"), seeds=1)
  """
  if experiment == "compare":
    compare.run(config, str(workdir), seeds=seeds)
  else:
    run_once(EXPERIMENTS[experiment], config, workdir)


def base_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
  """The ``--config.KEY=VALUE`` overrides a printed command repeats (not the seed)."""
  return {key: value for key, value in overrides.items() if key != "seed"}


def sweep(base: ml_collections.ConfigDict, root: str, grid_specs: list[str], *, seeds: int,
          experiment: str, print_commands: bool = False, config_arg: str = "",
          overrides: dict[str, Any] | None = None) -> list[Path]:
  """Runs (or prints) every point and seed; returns the runs' workdirs.

  ``config_arg`` (``file.py:arg``) and the flat ``overrides`` of the base config
  go into printed commands.
  """
  if seeds < 1:
    raise ValueError(f"--seeds must be at least 1, got {seeds}.")
  grid = parse_grid(grid_specs)
  listed = runs_of(base, grid, seeds, experiment, Path(root).absolute())
  for point, seed, _ in listed:  # Every point is checked before anything runs.
    for section in SECTIONS[experiment]:
      check_schedule(configured(base, point, seed), section)
  for index, (point, seed, workdir) in enumerate(listed, 1):
    if print_commands:
      print(command(experiment, point, seed, workdir, seeds=seeds, config_arg=config_arg,
                    overrides=overrides or {}))
      continue
    config = configured(base, point, seed)
    print(f"[{index}/{len(listed)}] {point_name(point)} seed {seed}: {workdir}", flush=True)
    run_point(experiment, config, workdir, seeds=seeds)
  return [workdir for _, _, workdir in listed]
