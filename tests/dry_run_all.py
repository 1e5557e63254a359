"""Runs many entrypoint command lines with ``--dry_run`` in this one process.

Reads a JSON list of argument lists (``["-m", "experiments.dft", "--config=...", ...]``,
the arguments a shell gave ``python``) from stdin and writes a JSON list of
``{"code": exit status, "stderr": its last two lines}``, one per command. Each command
runs as ``python -m`` would run it (``runpy``, ``__main__``) after the previous
one's flags are removed, so one Python start-up and one import of JAX serve all.

Example::

  echo '[["-m", "experiments.collect", "runs/x", "--dry_run"]]' | python -m tests.dry_run_all
"""
import contextlib
import io
import json
import runpy
import sys

from absl import flags

import experiments.cli  # noqa: F401  The shared flags (--dry_run), defined once.


def run(args: list[str], known: set[str]) -> dict:
  """Runs ``python ARGS`` in this process; returns its exit status and last two stderr lines."""
  if args[:1] != ["-m"] or len(args) < 2:
    return {"code": 2, "stderr": f"not a `python -m MODULE` command: {args}"}
  for name in set(flags.FLAGS) - known:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  sys.argv = [args[1], *args[2:]]
  stderr = io.StringIO()
  code = 0
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
    try:
      runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    except SystemExit as exited:
      code = exited.code if isinstance(exited.code, int) or exited.code is None else 1
      if isinstance(exited.code, str):
        stderr.write(exited.code + "\n")
    except Exception as error:  # pylint: disable=broad-exception-caught
      code = 1
      stderr.write(f"{type(error).__name__}: {error}\n")
  lines = stderr.getvalue().strip().splitlines()
  return {"code": code or 0, "stderr": " / ".join(lines[-2:])}


def main() -> None:
  known = set(flags.FLAGS)
  results = [run(args, known) for args in json.load(sys.stdin)]
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
