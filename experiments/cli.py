"""What every config-driven entrypoint shares: its flags and clear bad-input errors."""
import ast
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from dfm.run.workdir import RunFn


def quiet_library_logs() -> None:
  """Shows library logs from WARNING up unless ``--verbosity`` was given.

  Orbax logs every checkpoint save at INFO; runs print their own progress.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


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
  import errno  # pylint: disable=import-outside-toplevel  (keeps this change to this function)
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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag or config given as one line, no traceback.

  A config file that raises (e.g. an unknown experiment name) and a misspelt
  ``--config.a.b=`` override end the process with ``error: <the reason>``.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    reason = str(error).strip().splitlines()[-1].strip().removeprefix("ValueError: ")
  except (AttributeError, KeyError) as error:  # A misspelt --config.a.b=... override.
    reason = "unknown config field " + " ".join(_unquoted(str(error.args[0])).split("\n"))
  sys.exit(f"error: {reason}\nPass --helpshort to see the flags.")


def run_app(main: Callable[[list[str]], None]) -> None:
  """``app.run(main)`` with :func:`parse_flags`."""
  app.run(main, flags_parser=parse_flags)


def launch(run: RunFn) -> None:
  """Runs ``run(config, workdir)`` from ``--config`` and ``--workdir`` flags.

  The config is locked, so a misspelt ``--config.x.y=`` override fails; bad input
  ends the run with its message (:func:`exit_on_bad_input`).
  """
  config = config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. configs/digits.py:mnist5k", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory of this run (resumed if it exists).")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    exit_on_bad_input(lambda: run(config.value, workdir.value))

  run_app(main)
