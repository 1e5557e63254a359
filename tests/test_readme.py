"""README's promises: its example from another JAX project runs; the core stays pure."""
import re
import subprocess
import sys
from pathlib import Path

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
