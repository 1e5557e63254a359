"""Runs many ``python -m experiments.X ...`` command lines in one Python process.

One interpreter start-up and one import of JAX serve them all: :func:`run_all` starts
``python -m tests.entrypoints`` once, which runs each command as ``python -m`` would
(``runpy``, ``__main__``), its flags removed after it, its file descriptors 1 and 2
captured (so C++ and logging output are caught too), and returns what each printed and
its exit status. Commands that share the process share its imports and logging set-up:
keep tests of a fresh process's output (download banners, signals) in their own process.

Example::

  [result] = run_all([["-m", "experiments.collect", "runs/x", "--dry_run"]])
  result.returncode, result.stdout, result.stderr
"""
import contextlib
import json
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_all(commands: list[list[str]], *, cwd: Path = REPO,
            env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
  """Each ``python ARGS`` of ``commands`` (``["-m", MODULE, ...]``), run in one new process."""
  ran = subprocess.run([sys.executable, "-m", "tests.entrypoints"], cwd=cwd, env=env,
                       input=json.dumps(commands), capture_output=True, text=True, check=False,
                       timeout=600)
  if ran.returncode != 0:
    raise RuntimeError(f"tests.entrypoints failed: {ran.stderr[-2000:]}")
  return [subprocess.CompletedProcess(["python", *args], r["code"], r["stdout"], r["stderr"])
          for args, r in zip(commands, json.loads(ran.stdout.splitlines()[-1]))]


@contextlib.contextmanager
def _captured() -> Iterator[dict[str, str]]:
  """Points file descriptors 1 and 2 at temporary files; yields what they received."""
  outputs: dict[str, str] = {}
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    try:
      yield outputs
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for name, file in (("stdout", out), ("stderr", err)):
        file.seek(0)
        outputs[name] = file.read().decode(errors="replace")


def _run_module(args: list[str]) -> int:
  """``python -m MODULE ARGS`` in this process; its exit status."""
  sys.argv = [args[1], *args[2:]]
  try:
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
  except SystemExit as exited:
    if isinstance(exited.code, str):
      print(exited.code, file=sys.stderr)
      return 1
    return exited.code or 0
  except BaseException:  # pylint: disable=broad-exception-caught
    traceback.print_exc()
    return 1
  return 0


def main() -> None:
  """Reads the commands (JSON) from stdin; prints one JSON line of their results."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  import experiments.cli  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

  known = set(flags.FLAGS)
  results = []
  for args in json.load(sys.stdin):
    for name in set(flags.FLAGS) - known:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    if args[:1] != ["-m"] or len(args) < 2:
      results.append({"code": 2, "stdout": "", "stderr": f"not `python -m MODULE`: {args}"})
      continue
    with _captured() as outputs:
      code = _run_module(args)
    results.append({"code": code, **outputs})
  print(json.dumps(results))


if __name__ == "__main__":
  main()
