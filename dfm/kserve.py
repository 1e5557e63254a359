"""A model behind HTTP, spoken to in the Open Inference Protocol (KServe V2), as a black box.

One request scores a batch. The client sends the model's input tensor, flattened
row-major, and reads back its output the same way::

  POST {url}/v2/models/{name}/infer
  {"inputs": [{"name": "images", "shape": [2, 3, 4, 4], "datatype": "FP32",
               "data": [0.1, 0.7, ...]}]}                      # 2 * 3 * 4 * 4 numbers
  -> 200 {"model_name": "gender", "outputs": [{"name": "probabilities", "shape": [2, 2],
                                               "datatype": "FP32", "data": [0.9, 0.1, ...]}]}

  GET {url}/v2/models/{name}                                   # metadata, checked on load
  -> 200 {"name": "gender", "inputs": [{"name": "images", "datatype": "FP32",
                                        "shape": [-1, 3, 4, 4]}], "outputs": [...]}

:class:`HttpBlackBox` prepares images with the config's
:class:`dfm.model_input.InputSpec`, splits a call into requests of ``batch_size``
images, and retries what may pass on a second try, up to ``max_retries`` times: a
429 (or 5xx) after its ``Retry-After`` seconds, in full, if it sends one; other
5xx, dropped connections and timeouts after ``min(backoff_s * 2**attempt,
max_backoff_s)``. It refuses at once what will not pass (other 4xx, malformed
replies, wrong shapes, NaN): a reply it cannot trust is an error, never a silently
wrong score. A model that answers only its top k classes names them in a second
output (``classes_name``); the other classes come back NaN, unknown.

Example::

  model = HttpBlackBox("http://127.0.0.1:8500", "gender", spec, input_name="images",
                       output_name="probabilities", output_kind="probabilities",
                       num_classes=2, api_key_env="DFM_API_KEY")
  model(images)    # [N, 2]; model.counts == {"calls": ..., "images": N, "failures": ...}
"""
import http.client
import json
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from dfm.black_box import BlackBox, check_probabilities, scatter_top_k
from dfm.model_input import InputSpec
from dfm.onnx_model import (OUTPUT_KINDS, check_class_dims, check_input_dims, check_top_k,
                            softmax)

DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_NUMBER = (int, float)
# A server's error text quoted in our messages is cut to this many characters.
_QUOTE_CHARS = 300


class BlackBoxUnavailable(RuntimeError):
  """The service did not answer after every retry (5xx, 429, timeouts, dropped connections)."""


class _NonFinite(ValueError):
  pass


def _refuse_constant(token: str) -> None:
  raise _NonFinite(token)


def loads_strict(body: bytes | str, *, source: str) -> Any:
  """JSON ``body`` decoded, refusing NaN and Infinity (which Python's json would accept).

  Raises:
    ValueError: not UTF-8 JSON, or it holds NaN/Infinity.
  """
  try:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return json.loads(text, parse_constant=_refuse_constant)
  except _NonFinite as error:
    raise ValueError(f"{source} sent a non-finite number ({error}); refusing it.") from None
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ValueError(f"{source} sent a body that is not JSON ({error}): "
                     f"{_quote(body)}") from None


def server_said(body: bytes) -> str:
  """A server's error reply in short: its JSON ``error`` field if it has one, else the body."""
  try:
    reply = json.loads(body)
  except (UnicodeDecodeError, json.JSONDecodeError):
    return _quote(body)
  if isinstance(reply, dict) and isinstance(reply.get("error"), str):
    return _quote(reply["error"])
  return _quote(body)


def _quote(body: bytes | str) -> str:
  text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
  return repr(text[:_QUOTE_CHARS] + ("..." if len(text) > _QUOTE_CHARS else ""))


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
  """A float array as one protocol tensor: FP32 (or FP64), its shape, its data row-major."""
  array = np.asarray(array)
  datatype = "FP64" if array.dtype == np.float64 else "FP32"
  values = np.ascontiguousarray(array, DATATYPES[datatype])
  return {"name": name, "shape": list(values.shape), "datatype": datatype,
          "data": values.ravel().tolist()}


def _field(entry: Mapping[str, Any], key: str, source: str) -> Any:
  if key not in entry:
    raise ValueError(f"{source} sent a tensor without {key!r} (it has {sorted(entry)}).")
  return entry[key]


def decode_tensor(entry: Any, *, shape: Sequence[int | None], source: str) -> np.ndarray:
  """One protocol tensor as an array of ``shape`` (None: any size), checked value by value.

  Raises:
    ValueError: a missing key, a datatype other than FP32/FP64, a shape that is not
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
  if (not isinstance(dims, list)
      or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)):
    raise ValueError(f"{source} sent tensor {name!r} with shape {dims!r}; expected a list of "
                     "sizes.")
  if len(dims) != len(shape) or any(e is not None and d != e for d, e in zip(dims, shape)):
    wanted = [e if e is not None else "N" for e in shape]
    raise ValueError(f"{source} sent tensor {name!r} of shape {dims}; expected {wanted}.")
  if not isinstance(data, list) or not all(
      isinstance(v, _NUMBER) and not isinstance(v, bool) for v in data):
    raise ValueError(f"{source} sent tensor {name!r} whose data is not a flat list of numbers.")
  if len(data) != math.prod(dims):
    raise ValueError(f"{source} sent tensor {name!r} of shape {dims} with {len(data)} values; "
                     f"the shape holds {math.prod(dims)}.")
  with np.errstate(over="ignore"):
    values = np.asarray(data, DATATYPES[datatype]).reshape(dims)
  if not np.all(np.isfinite(values)):
    raise ValueError(f"{source} sent NaN or infinite values in tensor {name!r}; refusing them.")
  return values


def find_tensor(tensors: Any, name: str, *, source: str, what: str, field: str) -> Any:
  """The entry of ``tensors`` (a list of protocol tensors) called ``name``.

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
  ``outputs`` by name, if given)."""
  body: dict[str, Any] = {"inputs": [encode_tensor(input_name, tensor)]}
  if outputs:
    body["outputs"] = [{"name": name} for name in outputs]
  return json.dumps(body).encode()


def parse_infer_reply(body: bytes, *, output_name: str, num_images: int, num_classes: int,
                      source: str, classes_name: str = "") -> np.ndarray:
  """The ``[num_images, num_classes]`` scores in an infer reply, or a ValueError naming why not.

  With ``classes_name`` the reply is top-k: ``output_name`` holds k scores per image and
  ``classes_name`` their classes; the classes not named come back NaN (unknown).
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
  dims = _field(entry, "shape", source)
  if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
    raise ValueError(f"{source} declares shape {dims!r} for {entry.get('name')!r}; expected "
                     "a list of sizes.")
  return [None if d < 0 else d for d in dims]


def check_metadata(metadata: Any, *, spec: InputSpec, input_name: str, output_name: str,
                   num_classes: int, source: str, classes_name: str = "",
                   output_kind: str = "probabilities") -> None:
  """The model metadata declares ``input_name`` as ``[-1, *spec.shape]`` and
  ``output_name`` as ``[-1, num_classes]`` (top-k, with ``classes_name``: both it and
  ``output_name`` as ``[-1, k]``).

  Raises:
    ValueError: naming the config field to fix.
  """
  if not isinstance(metadata, Mapping):
    raise ValueError(f"{source} sent metadata that is not a JSON object.")
  entry = find_tensor(metadata.get("inputs"), input_name, source=source, what="input",
                      field="input_name")
  check_input_dims(_metadata_dims(entry, source), spec,
                   source=f"{source}: its input {input_name!r}")
  entry = find_tensor(metadata.get("outputs"), output_name, source=source, what="output",
                      field="output_name")
  dims = _metadata_dims(entry, source)
  if classes_name:
    classes = find_tensor(metadata.get("outputs"), classes_name, source=source, what="output",
                          field="classes_name")
    check_top_k(dims, _metadata_dims(classes, source), output_kind, num_classes, source=source)
    return
  check_class_dims(dims, num_classes, source=f"{source}: its output {output_name!r}")


def retry_after_s(value: str | None) -> float | None:
  """A ``Retry-After`` header in seconds (integer or float), or None if absent or a date."""
  try:
    return max(0.0, float(value)) if value is not None else None
  except ValueError:
    return None


def read_api_key(env: str, *, field: str = "config.black_box.api_key_env") -> str | None:
  """The API key held in the environment variable ``env`` (None when ``env`` is empty).

  Raises:
    ValueError: ``env`` is named (by ``field``) but unset or empty.
  """
  if not env:
    return None
  key = os.environ.get(env, "")
  if not key:
    raise ValueError(f"{field} names the environment variable {env}, but it is unset or "
                     f"empty: export {env}=<your API key>.")
  return key


class HttpBlackBox(BlackBox):
  """A classifier served over HTTP in the Open Inference Protocol, queried and counted.

  ``counts["calls"]`` and ``counts["images"]`` grow only for answered requests;
  ``counts["failures"]`` for every failed attempt, retried or not. The API key is
  read from the environment variable ``api_key_env`` and never shown.
  """

  def __init__(self, url: str, model_name: str, spec: InputSpec, *, input_name: str,
               output_name: str, output_kind: str, num_classes: int, classes_name: str = "",
               batch_size: int = 64,
               api_key_env: str = "", timeout_s: float = 30.0, max_retries: int = 5,
               backoff_s: float = 0.5, max_backoff_s: float = 30.0,
               check_on_load: bool = True, sleep: Callable[[float], None] = time.sleep) -> None:
    super().__init__()
    if output_kind not in OUTPUT_KINDS:
      raise ValueError(f"config.black_box.output_kind={output_kind!r} is not one of "
                       f"{OUTPUT_KINDS}.")
    _check_settings(batch_size, timeout_s, max_retries, backoff_s, max_backoff_s)
    if classes_name:
      check_top_k([None, None], [None, None], output_kind, num_classes, source=url)
    self._parts = _split_url(url)
    self.url, self.model_name, self.spec = url.rstrip("/"), model_name, spec
    self.num_classes = num_classes
    self.input_name, self.output_name, self.output_kind = input_name, output_name, output_kind
    self.classes_name, self.partial = classes_name, bool(classes_name)
    self.batch_size, self.api_key_env, self.timeout_s = batch_size, api_key_env, timeout_s
    self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
    self._sleep = sleep
    self.__key = read_api_key(api_key_env)
    self._model_path = f"/v2/models/{urllib.parse.quote(model_name, safe='')}"
    if check_on_load:
      self.check_model()

  def __repr__(self) -> str:
    return (f"HttpBlackBox(url={self.url!r}, model_name={self.model_name!r}, "
            f"api_key_env={self.api_key_env!r}, batch_size={self.batch_size})")

  def check_model(self) -> None:
    """Reads the model's metadata and checks it against the config (see :func:`check_metadata`)."""
    body = self._request("GET", self._model_path)
    source = f"The model {self.model_name!r} at {self.url}"
    try:
      metadata = loads_strict(body, source=source)
      check_metadata(metadata, spec=self.spec, input_name=self.input_name,
                     output_name=self.output_name, num_classes=self.num_classes, source=source,
                     classes_name=self.classes_name, output_kind=self.output_kind)
    except ValueError as error:
      self.counts["failures"] += 1
      raise ValueError(self._redact(str(error))) from None

  def calls_for(self, num_images: int) -> int:
    """Requests that ``num_images`` images take: one per ``batch_size``."""
    return -(-num_images // self.batch_size)

  def _score(self, images: np.ndarray) -> np.ndarray:
    tensor = self.spec.prepare(images)
    return np.concatenate([self._infer(tensor[start:start + self.batch_size])
                           for start in range(0, len(tensor), self.batch_size)])

  def _infer(self, tensor: np.ndarray) -> np.ndarray:
    """One request: ``tensor`` (a batch) in, checked probabilities out, counted when answered."""
    outputs = [self.output_name, *([self.classes_name] if self.partial else [])]
    body = self._request("POST", f"{self._model_path}/infer",
                         infer_body(self.input_name, tensor, outputs))
    source = f"The model {self.model_name!r} at {self.url}"
    try:
      scores = parse_infer_reply(body, output_name=self.output_name, num_images=len(tensor),
                                 num_classes=self.num_classes, source=source,
                                 classes_name=self.classes_name)
      if self.output_kind == "logits":
        scores = softmax(scores)
      probabilities = check_probabilities(scores, len(tensor), self.num_classes, source=source,
                                          partial=self.partial)
    except ValueError as error:
      self.counts["failures"] += 1
      logging.warning("%s: refusing a reply: %s", type(self).__name__, self._redact(str(error)))
      raise ValueError(self._redact(str(error))) from None
    self._count_call(len(tensor))
    return probabilities

  def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
    """The body of a 200 reply to ``method path``, after the retry policy.

    Raises:
      BlackBoxUnavailable: no 200 after ``max_retries`` retries.
      ValueError: a 4xx other than 429 (a config problem; not retried).
    """
    attempts = self.max_retries + 1
    for attempt in range(attempts):
      try:
        status, retry_after, reply = self._send(method, path, body)
      except (OSError, http.client.HTTPException) as error:
        problem, wait = _describe(error), self._backoff(attempt)
      else:
        if status == 200:
          return reply
        problem = f"HTTP {status} {server_said(reply)}"
        if status != 429 and status < 500:
          self._fail(method, path, attempt, attempts, problem, None)
          raise ValueError(self._refusal(status, reply))
        wait = self._wait(retry_after, attempt)
      self._fail(method, path, attempt, attempts, problem, wait if attempt + 1 < attempts else None)
      if attempt + 1 < attempts:
        self._sleep(wait)
    raise BlackBoxUnavailable(
        f"{method} {self.url}{path} failed {attempts} times (last: {self._redact(problem)}); the "
        "service is unavailable. Try again later or raise config.black_box.max_retries.")

  def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, float | None, bytes]:
    """One attempt: (status, Retry-After in seconds or None, body)."""
    scheme, host, port, prefix = self._parts
    connection_type = {"http": http.client.HTTPConnection,
                       "https": http.client.HTTPSConnection}[scheme]
    connection = connection_type(host, port, timeout=self.timeout_s)
    headers = {"Accept": "application/json"}
    if body is not None:
      headers["Content-Type"] = "application/json"
    if self.__key is not None:
      headers["Authorization"] = f"Bearer {self.__key}"
    try:
      connection.request(method, prefix + path, body=body, headers=headers)
      response = connection.getresponse()
      return response.status, retry_after_s(response.getheader("Retry-After")), response.read()
    finally:
      connection.close()

  def _backoff(self, attempt: int) -> float:
    return min(self.backoff_s * 2 ** attempt, self.max_backoff_s)

  def _wait(self, retry_after: float | None, attempt: int) -> float:
    """Seconds before retrying a 429 or 5xx: its Retry-After in full (the server asked
    for it; retrying sooner only earns another 429), else the capped backoff."""
    if retry_after is None:
      return self._backoff(attempt)
    return retry_after

  def _fail(self, method: str, path: str, attempt: int, attempts: int, problem: str,
            wait: float | None) -> None:
    self.counts["failures"] += 1
    then = f"retrying in {wait:.3g} s" if wait is not None else "giving up"
    logging.warning("%s: %s %s%s failed (attempt %d of %d): %s; %s.", type(self).__name__,
                    method, self.url, path, attempt + 1, attempts, self._redact(problem), then)

  def _refusal(self, status: int, reply: bytes) -> str:
    """The message of a 4xx that a retry would not fix."""
    said = f"HTTP {status} from {self.url} ({self._redact(server_said(reply))})"
    if status in (401, 403):
      if self.api_key_env:
        return (f"{said}. The server refused the API key: set the API key in the environment "
                f"variable {self.api_key_env} (config.black_box.api_key_env).")
      return (f"{said}. The server needs an API key: put it in an environment variable and "
              "name that variable in config.black_box.api_key_env.")
    if status < 400:
      return (f"{said}. Expected 200: point config.black_box.url at the inference server "
              "itself (redirects are not followed).")
    if status == 404:
      return (f"{said}. There is no model {self.model_name!r} there: check "
              "config.black_box.model_name and config.black_box.url.")
    return (f"{said}. The server refused the request: check config.black_box.input_name and "
            "config.black_box.input against the model.")

  def _redact(self, text: str) -> str:
    return text.replace(self.__key, "<API key>") if self.__key else text


def _describe(error: BaseException) -> str:
  if isinstance(error, TimeoutError):
    return "timed out"
  return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _split_url(url: str) -> tuple[str, str, int | None, str]:
  """(scheme, host, port, path prefix) of ``url``, or a ValueError naming the config field."""
  parts = urllib.parse.urlsplit(url.rstrip("/"))
  if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
    raise ValueError(f"config.black_box.url={url!r} is not a URL like http://127.0.0.1:8500.")
  return parts.scheme, parts.hostname, parts.port, parts.path


def _check_settings(batch_size: int, timeout_s: float, max_retries: int, backoff_s: float,
                    max_backoff_s: float) -> None:
  if batch_size < 1:
    raise ValueError(f"config.black_box.batch_size must be at least 1, got {batch_size}.")
  if timeout_s <= 0:
    raise ValueError(f"config.black_box.timeout_s must be positive, got {timeout_s}.")
  if max_retries < 0:
    raise ValueError(f"config.black_box.max_retries must be at least 0, got {max_retries}.")
  if backoff_s < 0 or max_backoff_s < backoff_s:
    raise ValueError(f"config.black_box needs 0 <= backoff_s <= max_backoff_s, got "
                     f"{backoff_s} and {max_backoff_s}.")
