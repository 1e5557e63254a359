"""What every config-driven entrypoint shares: its flags and clear bad-input errors."""
import ast
import errno
import logging as std_logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import app, flags, logging
import jax
import ml_collections
import tensorflow_datasets as tfds
from ml_collections import config_flags

from dfm.run.workdir import RunFn


class _DropNoise(std_logging.Filter):
  """Drops library warnings that describe normal operation, e.g. TFDS's ``Variant
  folder ... has no dataset_info.json`` about a dataset not prepared yet."""

  NOISE = ("has no dataset_info.json",)

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in self.NOISE)


def quiet_library_logs() -> None:
  """Shows library logs from WARNING up unless ``--verbosity`` was given, without
  :class:`_DropNoise`'s warnings; no progress bars' cursor codes when stderr is not a
  terminal (a log file).

  Orbax logs every checkpoint save at INFO; runs print their own progress.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  logging.get_absl_logger().addFilter(_DropNoise())
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()


BAD_INPUT = (ValueError, FileNotFoundError, FloatingPointError)
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for Ctrl-C.


def exit_on_bad_input(work: Callable[[], Any]) -> Any:
  """Runs ``work()``; bad input, a full disk or Ctrl-C end the process with one line.

  Bad input (ValueError, FileNotFoundError, FloatingPointError) already names the
  problem and the fix, so a traceback would only bury it: ``error: <message>``,
  exit 1. A full disk (OSError ENOSPC or EDQUOT) is ``error: <message>`` too, exit
  1. Ctrl-C prints the interrupt's message alone, e.g. ``interrupted at batch 3 of
  5; saved; rerun the same command to resume`` (:class:`dfm.run.loop.Interrupted`),
  exit 130.

  Example::

    exit_on_bad_input(lambda: methods.dft(config, workdir))
  """
  try:
    return work()
  except BAD_INPUT as error:
    sys.exit(f"error: {error}")
  except OSError as error:
    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    where = f" writing {error.filename}" if error.filename else ""
    fix = "" if "rerun" in error.strerror else (
        ": free some space (or pass a --workdir on a larger disk) and rerun the same command")
    sys.exit(f"error: {error.strerror}{where}{fix}")
  except KeyboardInterrupt as error:
    print(str(error) or "interrupted; rerun the same command to resume", file=sys.stderr,
          flush=True)
    sys.exit(INTERRUPTED_STATUS)


def _unquoted(text: str) -> str:
  """``text`` without the repr() quoting a re-raised KeyError adds, if it has some."""
  try:
    unquoted = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  return unquoted if isinstance(unquoted, str) else text


HELP_ARGS = ("--help", "-h", "--helpshort", "-?")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Check the flags and the config with its overrides, print them "
    "(the config as JSON, every field), and exit without running.")


def _own_flags() -> list[flags.Flag]:
  """The flags this entrypoint and experiments/cli.py define (not the libraries')."""
  modules = flags.FLAGS.flags_by_module_dict()
  own = [flag for name, defined in modules.items()
         if name in (sys.argv[0], "__main__") or name.startswith("experiments")
         for flag in defined]
  return sorted({flag.name: flag for flag in own}.values(), key=lambda flag: flag.name)


def print_help() -> None:
  """The entrypoint's docstring and its own flags, one per line."""
  print((sys.modules["__main__"].__doc__ or "").strip() + "\n\nFlags:")
  for flag in _own_flags():
    default = "" if flag.default is None else f" (default: {flag.default})"
    print(f"  --{flag.name}: {flag.help}{default}")
  if any(flag.name == "config" for flag in _own_flags()):
    print("\n--config.FIELD=VALUE overrides a field of the config; --dry_run prints them all.")
  print("--helpfull lists the libraries' flags too.")


def _print_resolved() -> None:
  """The parsed flags, configs printed whole as JSON."""
  for flag in _own_flags():
    if isinstance(flag.value, ml_collections.ConfigDict):
      print(f"--{flag.name}:\n{flag.value.to_json_best_effort(indent=2, sort_keys=True)}")
    elif flag.name != "dry_run":
      print(f"--{flag.name}={flag.value}")


def _missing_config_file(argv: list[str]) -> str | None:
  """The reason a ``--config=FILE[:ARG]`` names no file, if it does not."""
  for arg in argv[1:]:
    name, _, value = arg.partition("=")
    path = Path(value.partition(":")[0])
    if name == "--config" and value and not path.is_file():
      found = ", ".join(sorted(str(p) for p in Path("configs").glob("*.py") if p.stem != "__init__"))
      return (f"no config file {path} (from {arg}); run from the repository root, where "
              f"configs/ holds {found or 'the configs'}.")
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config given as one line, no traceback.

  ``--help`` (or ``-h``, ``--helpshort``) prints the entrypoint's own flags and
  exits 0; ``--dry_run`` prints the resolved flags and config and exits 0. A
  config file that is missing or raises (e.g. an unknown experiment name) and a
  misspelt ``--config.a.b=`` override end the process with ``error: <the reason>``.
  """
  if any(arg in HELP_ARGS for arg in argv[1:]):
    print_help()
    sys.exit(0)
  reason = _missing_config_file(argv)
  if reason is None:
    try:
      remaining = flags.FLAGS(argv)
      if _DRY_RUN.value:
        _print_resolved()
        sys.exit(0)
      return remaining
    except flags.Error as error:
      reason = str(error).strip().splitlines()[-1].strip().removeprefix("ValueError: ")
    except (AttributeError, KeyError) as error:  # A misspelt --config.a.b=... override.
      reason = "unknown config field " + " ".join(_unquoted(str(error.args[0])).split("\n"))
  sys.exit(f"error: {reason}\nPass --help to see the flags, --dry_run to see the config.")


def run_app(main: Callable[[list[str]], None]) -> None:
  """``app.run(main)`` with :func:`parse_flags`."""
  app.run(main, flags_parser=parse_flags)


# Processes other than 0 finish first (process 0 then evaluates and writes the results)
# and wait for it in JAX's shutdown barrier; past this timeout (JAX's default 300 s)
# JAX aborts every process, process 0 in the middle of its report (measured).
RESULTS_WAIT_S = 24 * 3600

# What JAX's own SLURM detection reads (jax._src.clusters.SlurmCluster): srun sets them all.
SLURM_TASK_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                   "SLURM_LOCALID")


def _srun_tasks() -> int:
  """The number of tasks SLURM's srun started of this command (1 outside srun)."""
  present = all(name in os.environ for name in SLURM_TASK_VARS)
  return int(os.environ["SLURM_NTASKS"]) if present else 1


def start_processes(coordinator_address: str | None, num_processes: int | None,
                    process_id: int | None) -> None:
  """Joins this process to the others of a multi-host run, before any other JAX use.

  With the three values given, or under SLURM's ``srun`` with several tasks (JAX
  then finds what is not given, one process per GPU), calls
  ``jax.distributed.initialize``: ``jax.devices()`` becomes every process's devices.
  With none given outside ``srun``, the run stays in this one process. Processes
  other than 0 print nothing on stdout (errors still reach stderr): process 0
  reports for all.

  Example::

    start_processes("10.0.0.1:1234", 2, 0)   # on host 0; host 1 passes process_id 1

  Raises:
    ValueError: some values missing outside ``srun``, or a process id out of range.
  """
  given = (coordinator_address, num_processes, process_id)
  if any(value is not None for value in given) or _srun_tasks() > 1:
    if None in given and _srun_tasks() == 1:
      raise ValueError("A multi-host run needs --coordinator_address, --num_processes and "
                       "--process_id all three (or none of them, under SLURM's srun).")
    if None not in given and not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} is not one of 0..{num_processes - 1}: "
                       "give each process its own id below --num_processes.")
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               shutdown_timeout_seconds=RESULTS_WAIT_S)
  if jax.process_index() > 0:
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with


def _define_host_flags() -> tuple[flags.FlagHolder, ...]:
  """``--coordinator_address``, ``--num_processes`` and ``--process_id`` (all unset)."""
  return (
      flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0, "
                          "the same for every process (under SLURM's srun: found by JAX)."),
      flags.DEFINE_integer("num_processes", None, "Multi-host: how many processes run this "
                           "command (under srun: found by JAX)."),
      flags.DEFINE_integer("process_id", None, "Multi-host: this process's id, 0 .. "
                           "num_processes - 1; process 0 writes the outputs (under srun: "
                           "found by JAX)."))


def launch(run: RunFn, *, multi_host: bool = False) -> None:
  """Runs ``run(config, workdir)`` from ``--config`` and ``--workdir`` flags.

  The config is locked, so a misspelt ``--config.x.y=`` override fails; bad input
  ends the run with its message (:func:`exit_on_bad_input`). ``multi_host`` adds
  the flags of :func:`start_processes`, which runs first.
  """
  config = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/digits.py:mnist5k", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory of this run (resumed if it exists).")
  flags.mark_flags_as_required(["config", "workdir"])
  hosts = _define_host_flags() if multi_host else ()

  def work() -> Any:
    if multi_host:
      start_processes(*(flag.value for flag in hosts))
    return run(config.value, workdir.value)

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    exit_on_bad_input(work)

  run_app(main)
