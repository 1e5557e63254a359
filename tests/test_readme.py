"""README's promises: its commands parse as typed, its example from another JAX project
runs, the core stays pure."""
import concurrent.futures
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_every_readme_command_parses_as_typed_in_the_venv_it_documents():
  """Each command, as README spells it, after README's `source .venv/bin/activate`, from
  the repository root, with --dry_run: its flags, config file and overrides all parse."""
  venv = README.parent / ".venv" / "bin" / "activate"
  if not venv.is_file():
    pytest.skip("no .venv: README's commands run in the venv `make` sets up")

  def dry_run(command: str) -> tuple[str, subprocess.CompletedProcess]:
    script = f"source .venv/bin/activate && {command} --dry_run"
    return command, subprocess.run(["bash", "-c", script], cwd=README.parent,
                                   env={**os.environ, "S": "1"},  # README's `for S in 1 2`.
                                   capture_output=True, text=True, check=False)

  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(dry_run, readme_commands()))
  failed = [f"{command}\n  -> {result.stderr.strip().splitlines()[-1:]}"
            for command, result in results if result.returncode != 0]
  assert not failed, "\n".join(failed)
