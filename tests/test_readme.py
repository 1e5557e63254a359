"""README's promises: its commands parse as typed, its example from another JAX project
runs, the core stays pure."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import entrypoints

README = Path(__file__).parent.parent / "README.md"


def test_readme_example_from_another_jax_project_runs():
  section = README.read_text().split("## Using the loss functions in another JAX project")[1]
  code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
  namespace: dict = {}
  exec(compile(code, "README example", "exec"), namespace)  # pylint: disable=exec-used
  assert float(namespace["metrics"]["loss"]) < float(namespace["first"]["loss"])


def test_core_imports_neither_flax_nor_io():
  code = ("import sys, dfm; "
          "print(sorted({m.split('.')[0] for m in sys.modules} & "
          "{'flax', 'tensorflow_datasets', 'grain', 'orbax', 'PIL', 'matplotlib'}))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == "[]"


def readme_commands() -> list[str]:
  """Every ``python -m experiments.X ...`` line of README's shell blocks, continuations joined."""
  commands = []
  for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("  #")[0].strip()
      if line.startswith("python -m experiments."):
        commands.append(" ".join(line.split()))
  return list(dict.fromkeys(commands))


def test_readme_shows_the_commands_this_test_checks():
  commands = readme_commands()
  assert len(commands) > 25
  assert {command.split()[2] for command in commands} >= {
      "experiments.prepare", "experiments.train_classifier", "experiments.dft",
      "experiments.compare", "experiments.sweep", "experiments.collect", "experiments.query_dft",
      "experiments.serve_model", "experiments.evaluate", "experiments.torch_to_onnx"}


def test_every_readme_command_parses_as_typed_in_the_venv_it_documents(tmp_path):
  """Each command, as README spells it, after README's `source .venv/bin/activate`, from
  the repository root, with --dry_run: its flags, config file and overrides all parse.

  bash reads every line as typed (quotes, ``$S``) and hands the venv's ``python`` the
  arguments; they are recorded, then all run in one process (tests/entrypoints.py)."""
  venv = README.parent / ".venv" / "bin" / "activate"
  if not venv.is_file():
    pytest.skip("no .venv: README's commands run in the venv `make` sets up")
  commands = readme_commands()
  record = tmp_path / "arguments.jsonl"
  script = "\n".join([
      "source .venv/bin/activate",
      'test "$(command -v python)" = "$PWD/.venv/bin/python" || exit 3',
      "python() { command python -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\""
      f" >> {record}; }}",
      *(f"{command} --dry_run" for command in commands)])
  shell = subprocess.run(["bash", "-c", script], cwd=README.parent, env={**os.environ, "S": "1"},
                         capture_output=True, text=True, check=False)  # README's `for S in 1 2`.
  assert shell.returncode == 0, shell.stderr
  arguments = [json.loads(line) for line in record.read_text().splitlines()]
  assert len(arguments) == len(commands)
  results = entrypoints.run_all(arguments)
  failed = [f"{command}\n  -> {' / '.join(result.stderr.strip().splitlines()[-2:])}"
            for command, result in zip(commands, results) if result.returncode != 0]
  assert not failed, "\n".join(failed)
