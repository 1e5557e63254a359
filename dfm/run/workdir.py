"""The run directory: created once, bound to one config, never overwritten by another."""
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from dfm import parallel

RunFn = Callable[[ml_collections.ConfigDict, str], Any]


# Values of a field added to dfm's configs since a run was made that leave its meaning
# alone (e.g. ``dft.lams: ()``, and the integer 0, e.g. ``dft.examples_per_class: 0``):
# a config.json without the field is the same config.
_NEUTRAL = ([], (), "", None, {})
# Sections added since, which only their own method reads (``probe``: the linear probe's):
# a config.json without one is the same config.
_ADDED_SECTIONS = ("probe",)


def _is_neutral(value: Any) -> bool:
  """Whether a field newly added at ``value`` leaves an earlier run's meaning alone."""
  if isinstance(value, (bool, float)):
    return False
  return value == 0 if isinstance(value, int) else value in _NEUTRAL


# Top-level fields that change what a run draws, not what it computes: a run resumes
# whatever their value.
_OUTPUT_ONLY = ("figures",)


def _differing_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
  """The dotted keys whose values differ (a key only in ``new``, at a neutral value or
  one of the :data:`_ADDED_SECTIONS`, does not; nor do the top-level
  :data:`_OUTPUT_ONLY` fields)."""
  differing, keys = [], set(old) | set(new)
  if not prefix:
    keys -= set(_OUTPUT_ONLY)
  for key in sorted(keys):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      differing += _differing_keys(a, b, f"{prefix}{key}.")
    elif a != b and not (key not in old and (_is_neutral(b) or
                                             (not prefix and key in _ADDED_SECTIONS))):
      differing.append(f"{prefix}{key}")
  return differing


def claim_workdir(workdir: str, config: ml_collections.ConfigDict) -> Path:
  """Creates ``workdir`` and binds it to ``config`` (written as ``config.json``).

  A workdir that already holds ``config.json`` of the same config is reused (the
  run resumes); one that holds a different config is refused, so no earlier run
  is ever overwritten.

  Raises:
    ValueError: the workdir cannot be written, or holds a run of another config.
  """
  path = Path(workdir).expanduser().absolute()
  try:
    path.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=path).close()
  except OSError as error:
    raise ValueError(
        f"Cannot write to workdir {path} ({error.strerror}). Pass a --workdir you can "
        "write to.") from error
  wanted = json.loads(config.to_json_best_effort(sort_keys=True))
  config_file = path / "config.json"
  if config_file.exists():
    differing = _differing_keys(json.loads(config_file.read_text()), wanted)
    if differing:
      raise ValueError(
          f"Workdir {path} holds a run with a different config (differs in: "
          f"{', '.join(differing)}). Use a new --workdir, or move "
          "that run away yourself; dfm never overwrites a run.")
    return path
  if parallel.is_main_process():  # Multi-host: process 0 writes, whole (the others may read).
    staged = path / "config.json.partial"
    staged.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    staged.replace(config_file)
  return path


def write_json(path: Path, payload: dict) -> None:
  """Writes ``payload`` as indented JSON (``Infinity`` for an unchanged PSNR)."""
  path.write_text(json.dumps(payload, indent=2) + "\n")


def run_once(run_fn: RunFn, config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
  """``run_fn(config, workdir)`` unless it has finished (``metrics.json``) already.

  A finished run counts only if it ran this very config (checked as
  :func:`claim_workdir` does: a different one is refused, never reused).

  Example::

    results = run_once(methods.dft, config, Path("runs/dft/seed0"))
  """
  finished = Path(workdir) / "metrics.json"
  if finished.is_file():
    claim_workdir(str(workdir), config)
    print(f"Finished already: {workdir}", flush=True)
    return json.loads(finished.read_text())
  return run_fn(config, str(workdir))
