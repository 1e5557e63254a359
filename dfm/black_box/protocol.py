"""The Open Inference Protocol (KServe V2) in JSON: tensors, infer requests and replies.

A tensor is a JSON object holding its name, shape, datatype and data, flattened
row-major. One infer request sends the model's input tensor and names the
outputs it wants back::

  POST {url}/v2/models/{name}/infer
  {"inputs": [{"name": "images", "shape": [2, 3, 4, 4], "datatype": "FP32",
               "data": [0.1, 0.7, ...]}]}                      # 2 * 3 * 4 * 4 numbers
  -> 200 {"model_name": "gender", "outputs": [{"name": "probabilities", "shape": [2, 2],
                                               "datatype": "FP32", "data": [0.9, 0.1, ...]}]}

  GET {url}/v2/models/{name}                                   # metadata, checked on load
  -> 200 {"name": "gender", "inputs": [{"name": "images", "datatype": "FP32",
                                        "shape": [-1, 3, 4, 4]}], "outputs": [...]}

The protocol lets a server declare no inputs or outputs (MLServer's default is
``"inputs": [], "outputs": []``); what the metadata does not declare is checked in
the first infer reply instead (:class:`dfm.black_box.http_client.HttpBlackBox`).

Everything read is checked: JSON with no NaN or Infinity, the declared shape,
datatype and length, finite numbers. A reply that cannot be trusted is a
ValueError naming the fault, never a silently wrong score. Both the client
(:mod:`dfm.black_box.http_client`) and the test server
(:mod:`dfm.black_box.local_server`) speak it through this module.

Example::

  body = infer_body("images", tensor, ["probabilities"])
  scores = parse_infer_reply(reply, output_name="probabilities", num_images=2,
                             num_classes=2, source="The model 'gender'")
"""
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from dfm.black_box.base import scatter_top_k
from dfm.models.input_spec import InputSpec
from dfm.black_box.shapes import check_class_dims, check_input_dims, check_top_k

DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_NUMBER = (int, float)
# A server's error text quoted in our messages is cut to this many characters.
_QUOTE_CHARS = 300


class _NonFinite(ValueError):
  pass


def _refuse_constant(token: str) -> None:
  raise _NonFinite(token)


def _quote(body: bytes | bytearray | str) -> str:
  text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
  return repr(text[:_QUOTE_CHARS] + ("..." if len(text) > _QUOTE_CHARS else ""))


def loads_strict(body: bytes | bytearray | str, *, source: str) -> Any:
  """JSON ``body`` decoded, refusing NaN and Infinity (which Python's json would accept).

  Example::

    loads_strict(b'{"data": [1, 2]}', source="The server")  # {"data": [1, 2]}

  Raises:
    ValueError: not UTF-8 JSON, or it holds NaN/Infinity.
  """
  try:
    text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    return json.loads(text, parse_constant=_refuse_constant)
  except _NonFinite as error:
    raise ValueError(f"{source} sent a non-finite number ({error}); refusing it.") from None
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ValueError(f"{source} sent a body that is not JSON ({error}): "
                     f"{_quote(body)}") from None


def server_said(body: bytes) -> str:
  """A server's error reply in short: its JSON ``error`` field if it has one, else the body.

  Example::

    server_said(b'{"error": "No model named x"}')  # "'No model named x'"
  """
  try:
    reply = json.loads(body)
  except (UnicodeDecodeError, json.JSONDecodeError):
    return _quote(body)
  if isinstance(reply, dict) and isinstance(reply.get("error"), str):
    return _quote(reply["error"])
  return _quote(body)


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
  """A float array as one protocol tensor: FP32 (or FP64), its shape, its data row-major.

  Example::

    encode_tensor("images", np.zeros((1, 2)))  # {..., "shape": [1, 2], "datatype": "FP64"}
  """
  array = np.asarray(array)
  datatype = "FP64" if array.dtype == np.float64 else "FP32"
  values = np.ascontiguousarray(array, DATATYPES[datatype])
  return {"name": name, "shape": list(values.shape), "datatype": datatype,
          "data": values.ravel().tolist()}


def _field(entry: Mapping[str, Any], key: str, source: str) -> Any:
  if key not in entry:
    raise ValueError(f"{source} sent a tensor without {key!r} (it has {sorted(entry)}).")
  return entry[key]


def _check_dims(dims: Any, shape: Sequence[int | None], name: str, source: str) -> None:
  if (not isinstance(dims, list)
      or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)):
    raise ValueError(f"{source} sent tensor {name!r} with shape {dims!r}; expected a list of "
                     "sizes.")
  if len(dims) != len(shape) or any(e is not None and d != e for d, e in zip(dims, shape)):
    wanted = [e if e is not None else "N" for e in shape]
    raise ValueError(f"{source} sent tensor {name!r} of shape {dims}; expected {wanted}.")


def decode_tensor(entry: Any, *, shape: Sequence[int | None], source: str,
                  dtype: type | None = None) -> np.ndarray:
  """One protocol tensor as an array of ``shape`` (None: any size), checked value by value;
  the numbers go straight into ``dtype`` if given (else the datatype's own), one copy.

  Example::

    decode_tensor({"name": "p", "shape": [1, 2], "datatype": "FP32", "data": [0.3, 0.7]},
                  shape=(None, 2), source="The server")  # [[0.3, 0.7]]

  Raises:
    ValueError: a missing key, a datatype not in :data:`DATATYPES`, a shape that is not
      ``shape`` or does not match the data's length, non-numbers, NaN or infinity.
  """
  if not isinstance(entry, Mapping):
    raise ValueError(f"{source} sent a tensor that is not a JSON object: {_quote(str(entry))}")
  name = entry.get("name", "?")
  datatype = _field(entry, "datatype", source)
  if datatype not in DATATYPES:
    raise ValueError(f"{source} sent tensor {name!r} as {datatype!r}; only {sorted(DATATYPES)} "
                     "are read.")
  dims, data = _field(entry, "shape", source), _field(entry, "data", source)
  _check_dims(dims, shape, name, source)
  if not isinstance(data, list) or not all(
      isinstance(v, _NUMBER) and not isinstance(v, bool) for v in data):
    raise ValueError(f"{source} sent tensor {name!r} whose data is not a flat list of numbers.")
  if len(data) != math.prod(dims):
    raise ValueError(f"{source} sent tensor {name!r} of shape {dims} with {len(data)} values; "
                     f"the shape holds {math.prod(dims)}.")
  with np.errstate(over="ignore"):
    values = np.asarray(data, dtype or DATATYPES[datatype]).reshape(dims)
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{source} sent NaN or infinite values in tensor {name!r}; refusing them.")
  return values


def find_tensor(tensors: Any, name: str, *, source: str, what: str, field: str) -> Any:
  """The entry of ``tensors`` (a list of protocol tensors) called ``name``.

  Example::

    find_tensor(reply["outputs"], "probabilities", source="The server", what="output",
                field="output_name")

  Raises:
    ValueError: no such tensor; the message names its config ``field``.
  """
  if not isinstance(tensors, list):
    raise ValueError(f"{source} sent {what}s that are not a list: {_quote(str(tensors))}")
  names = [t.get("name") for t in tensors if isinstance(t, Mapping)]
  for tensor in tensors:
    if isinstance(tensor, Mapping) and tensor.get("name") == name:
      return tensor
  raise ValueError(f"{source} has no {what} named {name!r} (it has {names}): "
                   f"set config.black_box.{field}.")


def infer_body(input_name: str, tensor: np.ndarray, outputs: Sequence[str] = ()) -> bytes:
  """The JSON body of an infer request sending ``tensor`` as ``input_name`` (asking for
  ``outputs`` by name, if given).

  Example::

    infer_body("images", np.zeros((2, 3, 4, 4), np.float32), ["probabilities"])
  """
  body: dict[str, Any] = {"inputs": [encode_tensor(input_name, tensor)]}
  if outputs:
    body["outputs"] = [{"name": name} for name in outputs]
  return json.dumps(body).encode()


def parse_infer_reply(body: bytes, *, output_name: str, num_images: int, num_classes: int,
                      source: str, classes_name: str = "") -> np.ndarray:
  """The ``[num_images, num_classes]`` scores in an infer reply, or a ValueError naming why not.

  With ``classes_name`` the reply is top-k: ``output_name`` holds k scores per image and
  ``classes_name`` their classes; the classes not named come back NaN (unknown).

  Example::

    parse_infer_reply(reply, output_name="probabilities", num_images=2, num_classes=2,
                      source="The model 'gender'")  # float [2, 2]
  """
  reply = loads_strict(body, source=source)
  if not isinstance(reply, Mapping) or "outputs" not in reply:
    raise ValueError(f"{source} sent a reply without 'outputs': {_quote(body)}")
  entry = find_tensor(reply["outputs"], output_name, source=source, what="output",
                      field="output_name")
  if not classes_name:
    return decode_tensor(entry, shape=(num_images, num_classes), source=source)
  scores = decode_tensor(entry, shape=(num_images, None), source=source)
  classes = decode_tensor(find_tensor(reply["outputs"], classes_name, source=source,
                                      what="output", field="classes_name"),
                          shape=scores.shape, source=source)
  return scatter_top_k(classes, scores, num_classes, source=source)


def _metadata_dims(entry: Mapping[str, Any], source: str) -> list[int | None]:
  """A tensor's declared shape, None where it is symbolic (-1)."""
  dims = _field(entry, "shape", source)
  if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
    raise ValueError(f"{source} declares shape {dims!r} for {entry.get('name')!r}; expected "
                     "a list of sizes.")
  return [None if d < 0 else d for d in dims]


class Declared(NamedTuple):
  """Whether a server's metadata declared (and so let dfm check) its ``inputs``/``outputs``."""

  inputs: bool
  outputs: bool


def _declares(metadata: Mapping[str, Any], what: str) -> bool:
  """The metadata lists ``what`` ("inputs" or "outputs"); absent or [] declares none."""
  return metadata.get(what) not in (None, [])


def check_metadata(metadata: Any, *, spec: InputSpec, input_name: str, output_name: str,
                   num_classes: int, source: str, classes_name: str = "",
                   output_kind: str = "probabilities") -> Declared:
  """The model metadata declares ``input_name`` as ``[-1, *spec.shape]`` and
  ``output_name`` as ``[-1, num_classes]`` (top-k, with ``classes_name``: both it and
  ``output_name`` as ``[-1, k]``). Inputs or outputs it does not declare (absent, or
  ``[]``) are not checked; the result says which were.

  Example::

    check_metadata(loads_strict(body, source=source), spec=spec, input_name="images",
                   output_name="probabilities", num_classes=2, source=source)
    # Declared(inputs=True, outputs=True); {"inputs": [], "outputs": []}: both False

  Raises:
    ValueError: naming the config field to fix.
  """
  if not isinstance(metadata, Mapping):
    raise ValueError(f"{source} sent metadata that is not a JSON object.")
  declared = Declared(_declares(metadata, "inputs"), _declares(metadata, "outputs"))
  if declared.inputs:
    entry = find_tensor(metadata["inputs"], input_name, source=source, what="input",
                        field="input_name")
    check_input_dims(_metadata_dims(entry, source), spec,
                     source=f"{source}: its input {input_name!r}")
  if not declared.outputs:
    return declared
  entry = find_tensor(metadata["outputs"], output_name, source=source, what="output",
                      field="output_name")
  dims = _metadata_dims(entry, source)
  if classes_name:
    classes = find_tensor(metadata["outputs"], classes_name, source=source, what="output",
                          field="classes_name")
    check_top_k(dims, _metadata_dims(classes, source), output_kind, num_classes, source=source)
  else:
    check_class_dims(dims, num_classes, source=f"{source}: its output {output_name!r}")
  return declared
