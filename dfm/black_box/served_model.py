"""The ONNX model behind :mod:`dfm.black_box.local_server`, in the protocol's terms.

Its metadata (inputs and outputs, ``-1`` for a symbolic size), the input arrays of
an infer request, and its outputs as protocol tensors.

Example::

  model = OnnxModel("model.onnx")
  outputs = model.run(model.wanted_outputs(request), model.feeds(request))
  [encode_output(name, value) for name, value in outputs.items()]
"""
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from dfm.black_box.onnx_file import open_session
from dfm.black_box.protocol import decode_tensor

_ONNX_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64"}
_REPLY_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
                    np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                    np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL"}


class OnnxModel:
  """An ONNX file run by onnxruntime on the CPU, described by its own inputs and outputs."""

  def __init__(self, path: str | Path) -> None:
    self.session = open_session(path)
    self.inputs = {arg.name: arg for arg in self.session.get_inputs()}
    self.outputs = [arg.name for arg in self.session.get_outputs()]
    for arg in self.inputs.values():
      if arg.type not in _ONNX_DATATYPES:
        raise ValueError(f"{path} takes input {arg.name!r} as {arg.type}; this server feeds "
                         f"only {sorted(_ONNX_DATATYPES)}.")

  def metadata(self, name: str, *, declare: bool = True) -> dict[str, Any]:
    """The protocol's model metadata, shapes with -1 where a size is symbolic; with
    ``declare=False`` it lists no inputs or outputs (``[]``, as the protocol allows)."""
    def describe(args: list[onnxruntime.NodeArg]) -> list[dict[str, Any]]:
      return [{"name": arg.name, "datatype": _ONNX_DATATYPES.get(arg.type, arg.type),
               "shape": [d if isinstance(d, int) else -1 for d in arg.shape]}
              for arg in args] if declare else []
    return {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": describe(self.session.get_inputs()),
            "outputs": describe(self.session.get_outputs())}

  def feeds(self, request: Any) -> dict[str, np.ndarray]:
    """The model's input arrays from an infer request, or a ValueError saying what is wrong."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
      raise ValueError("The request has no 'inputs' list.")
    given = {t.get("name"): t for t in request["inputs"] if isinstance(t, dict)}
    feeds = {}
    for name, arg in self.inputs.items():
      if name not in given:
        raise ValueError(f"The request has no input named {name!r} (it has {sorted(given)}); "
                         f"the model takes {sorted(self.inputs)}.")
      shape = [d if isinstance(d, int) else None for d in arg.shape]
      values = decode_tensor(given[name], shape=shape, source="The request")
      feeds[name] = values.astype(np.float64 if arg.type == "tensor(double)" else np.float32)
    return feeds

  def wanted_outputs(self, request: dict[str, Any]) -> list[str]:
    """The outputs the request names (all of them if it names none)."""
    wanted = [o.get("name") for o in request.get("outputs") or [] if isinstance(o, dict)]
    unknown = sorted(set(wanted) - set(self.outputs))
    if unknown:
      raise ValueError(f"The model has no outputs {unknown}; it has {self.outputs}.")
    return wanted or self.outputs

  def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(names, self.session.run(names, feeds)))


def encode_output(name: str, array: np.ndarray) -> dict[str, Any]:
  """One output array as a protocol tensor (NaN is written as the JSON token ``NaN``)."""
  array = np.asarray(array)
  if array.dtype not in _REPLY_DATATYPES:
    raise ValueError(f"The model's output {name!r} has dtype {array.dtype}, which this server "
                     "cannot send.")
  return {"name": name, "shape": list(array.shape), "datatype": _REPLY_DATATYPES[array.dtype],
          "data": array.ravel().tolist()}
