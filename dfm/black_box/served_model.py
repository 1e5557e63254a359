"""The ONNX model behind :mod:`dfm.black_box.local_server`, in the protocol's terms.

Its metadata (inputs and outputs, ``-1`` for a symbolic size), the input arrays of
an infer request, and its outputs as protocol tensors. A request's messages name
only what the model takes, never what the request sent (the server echoes nothing).

Example::

  model = OnnxModel("model.onnx")
  feeds = model.feeds(request, max_batch=256)   # BatchTooLarge past 256 images
  outputs = model.run(model.wanted_outputs(request), feeds)
  [encode_output(name, value) for name, value in outputs.items()]
"""
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from dfm.black_box.onnx_file import open_session
from dfm.black_box.protocol import decode_tensor

_ONNX_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64"}
_FEED_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_REPLY_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
                    np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                    np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL"}


class BatchTooLarge(ValueError):
  """An infer request holds more images than the server's ``max_batch`` (HTTP 413)."""


class OnnxModel:
  """An ONNX file run by onnxruntime on the CPU, described by its own inputs and outputs.

  Raises:
    ValueError: the file is not an ONNX model onnxruntime can load, or it takes an
      input that is not float.
  """

  def __init__(self, path: str | Path) -> None:
    self.session = open_session(path)
    self.inputs = {arg.name: arg for arg in self.session.get_inputs()}
    self.outputs = [arg.name for arg in self.session.get_outputs()]
    for arg in self.inputs.values():
      if arg.type not in _ONNX_DATATYPES:
        raise ValueError(f"{path} takes input {arg.name!r} as {arg.type}; this server feeds "
                         f"only {sorted(_ONNX_DATATYPES)}.")

  def item_shapes(self) -> list[list[int | None]]:
    """Each input's shape without its batch axis (None where a size is symbolic)."""
    return [[d if isinstance(d, int) else None for d in arg.shape[1:]]
            for arg in self.inputs.values()]

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

  def feeds(self, request: Any, *, max_batch: int) -> dict[str, np.ndarray]:
    """The model's input arrays from an infer request, each decoded straight into the
    model's dtype (float32 for FP32); every batch is checked against ``max_batch``
    before anything is decoded.

    Raises:
      BatchTooLarge: an input holds more than ``max_batch`` images.
      ValueError: what is wrong, in terms of the model (the request is not quoted).
    """
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
      raise ValueError("The request has no 'inputs' list.")
    given = {t.get("name"): t for t in request["inputs"] if isinstance(t, dict)}
    for name in self.inputs:
      if name not in given:
        raise ValueError(f"The request has no input named {name!r}; the model takes "
                         f"{sorted(self.inputs)}.")
      shape = given[name].get("shape")
      if isinstance(shape, list) and shape and isinstance(shape[0], int) and (
          shape[0] > max_batch):
        raise BatchTooLarge(f"The request holds more than this server's max_batch={max_batch} "
                            f"images; send at most {max_batch} per request.")
    return {name: self._decode(name, arg, given[name]) for name, arg in self.inputs.items()}

  def _decode(self, name: str, arg: onnxruntime.NodeArg, entry: Any) -> np.ndarray:
    shape = [d if isinstance(d, int) else None for d in arg.shape]
    try:
      return decode_tensor(entry, shape=shape, source="The request",
                           dtype=_FEED_DTYPES[arg.type])
    except ValueError:
      wanted = [d if d is not None else "N" for d in shape]
      raise ValueError(f"Input {name!r} must be a tensor of shape {wanted}, datatype FP32 or "
                       "FP64, its data a flat list of that many finite numbers.") from None

  def wanted_outputs(self, request: dict[str, Any]) -> list[str]:
    """The outputs the request names (all of them if it names none)."""
    wanted = [o.get("name") for o in request.get("outputs") or [] if isinstance(o, dict)]
    if set(wanted) - set(self.outputs):
      raise ValueError(f"The request asks for an output this model does not have; it has "
                       f"{self.outputs}.")
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
