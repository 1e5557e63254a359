"""A real HTTP server for any ONNX model in the Open Inference Protocol (KServe V2).

It is what :class:`dfm.kserve.HttpBlackBox` talks to in tests and on a desk: the
standard library's threading HTTP server in front of an onnxruntime session::

  GET  /v2/health/ready              -> 200 {"ready": true}          (also /v2/health/live)
  GET  /v2/models/{name}             -> 200 metadata: inputs and outputs with their
                                        datatype and shape (-1 for a symbolic size)
  POST /v2/models/{name}/infer       -> 200 {"model_name", "outputs": [...]}
  an unknown model -> 404, a bad body -> 400, both as {"error": "..."}

With ``api_key`` every ``/v2/models`` request needs ``Authorization: Bearer KEY``
(else 401); with ``max_requests_per_s`` a token bucket (burst 1) answers 429 with a
``Retry-After`` header in seconds when requests come faster.

Faults are injected for resilience tests: ``server.faults`` is a queue, and each
infer request (past the key and the rate limit) takes the next fault, if any, in
:data:`FAULTS`: "500", "503", "429" (``Retry-After: fault_retry_after_s``),
"timeout" (answers after ``fault_delay_s``), "malformed" (200, not JSON),
"wrong_shape" (one score row short), "nan" (a ``NaN`` score), "drop" (the
connection closed unanswered), or "ok" (a good answer, to place faults after some).
``server.requests_answered`` counts the good answers.

Example::

  server = make_server("model.onnx", model_name="gender", port=0, api_key="secret")
  server.serve_in_background()
  server.url                       # "http://127.0.0.1:41234"
  server.faults.append("503")      # the next infer request answers 503
  server.close()
"""
import collections
import hmac
import http.server
import json
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from absl import logging
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from dfm.kserve import decode_tensor, loads_strict

FAULTS = ("ok", "500", "503", "429", "timeout", "malformed", "wrong_shape", "nan", "drop")
MAX_BODY_BYTES = 512 * 2**20
_ONNX_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64"}
_REPLY_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
                    np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
                    np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL"}
_MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?(?P<action>/[a-z]+)?$")


class OnnxModel:
  """An ONNX file run by onnxruntime on the CPU, described by its own inputs and outputs."""

  def __init__(self, path: str | Path) -> None:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    self.session = onnxruntime.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
    self.inputs = {arg.name: arg for arg in self.session.get_inputs()}
    self.outputs = [arg.name for arg in self.session.get_outputs()]
    for arg in self.inputs.values():
      if arg.type not in _ONNX_DATATYPES:
        raise ValueError(f"{path} takes input {arg.name!r} as {arg.type}; this server feeds "
                         f"only {sorted(_ONNX_DATATYPES)}.")

  def metadata(self, name: str) -> dict[str, Any]:
    """The protocol's model metadata, shapes with -1 where a size is symbolic."""
    def describe(arg: onnxruntime.NodeArg) -> dict[str, Any]:
      return {"name": arg.name, "datatype": _ONNX_DATATYPES.get(arg.type, arg.type),
              "shape": [d if isinstance(d, int) else -1 for d in arg.shape]}
    return {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [describe(arg) for arg in self.session.get_inputs()],
            "outputs": [describe(arg) for arg in self.session.get_outputs()]}

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


class FaultQueue(collections.deque):
  """Fault names, taken one per infer request; appending an unknown name fails at once."""

  def append(self, fault: str) -> None:
    super().append(_known_fault(fault))

  def extend(self, faults: Iterable[str]) -> None:
    super().extend([_known_fault(fault) for fault in faults])


def _known_fault(fault: str) -> str:
  if fault not in FAULTS:
    raise ValueError(f"Unknown fault {fault!r}; inject one of {FAULTS}.")
  return fault


class TokenBucket:
  """``rate`` requests a second, ``burst`` at once; :meth:`take` says how long to wait."""

  def __init__(self, rate: float, burst: float = 1.0) -> None:
    if rate <= 0:
      raise ValueError(f"max_requests_per_s must be positive, got {rate}.")
    self.rate, self.burst, self.tokens = rate, burst, burst
    self.last = time.monotonic()
    self._lock = threading.Lock()

  def take(self) -> float:
    """0 if a request may pass now (it takes a token), else the seconds until one may."""
    with self._lock:
      now = time.monotonic()
      self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
      self.last = now
      if self.tokens >= 1:
        self.tokens -= 1
        return 0.0
      return (1 - self.tokens) / self.rate


class InferenceServer(http.server.ThreadingHTTPServer):
  """The threading HTTP server holding the model, the key, the rate limit and the faults."""

  daemon_threads = True

  def __init__(self, address: tuple[str, int], model: OnnxModel, *, model_name: str,
               api_key: str | None = None, max_requests_per_s: float | None = None,
               faults: Iterable[str] | None = None) -> None:
    self.model, self.model_name = model, model_name
    self.faults = FaultQueue()
    self.faults.extend(faults or ())
    self.fault_delay_s = 60.0
    self.fault_retry_after_s = 0.01
    self.requests_answered = 0
    self._api_key = api_key or None
    self._bucket = TokenBucket(max_requests_per_s) if max_requests_per_s else None
    self._lock = threading.Lock()
    self._stopping = threading.Event()
    self._thread: threading.Thread | None = None
    super().__init__(address, _Handler)

  def __repr__(self) -> str:
    return f"InferenceServer(url={self.url!r}, model_name={self.model_name!r})"

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}"

  def serve_in_background(self) -> threading.Thread:
    """Serves from a daemon thread until :meth:`close`."""
    self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                    name="inference-server", daemon=True)
    self._thread.start()
    return self._thread

  def close(self) -> None:
    """Stops serving (waking requests delayed by a "timeout" fault) and frees the port."""
    self._stopping.set()
    if self._thread is not None:
      self.shutdown()
      self._thread.join()
      self._thread = None
    self.server_close()

  def __exit__(self, *args: Any) -> None:
    self.close()

  def authorized(self, header: str | None) -> bool:
    if self._api_key is None:
      return True
    expected = f"Bearer {self._api_key}".encode()
    return hmac.compare_digest((header or "").encode(), expected)

  def wait_for_token(self) -> float:
    """0 if the rate limit lets a request pass now, else the seconds to wait."""
    return self._bucket.take() if self._bucket is not None else 0.0

  def next_fault(self) -> str | None:
    try:
      return self.faults.popleft()
    except IndexError:
      return None

  def delay(self) -> None:
    """Waits ``fault_delay_s``, or less if the server is closing."""
    self._stopping.wait(self.fault_delay_s)

  def count_answer(self) -> None:
    with self._lock:
      self.requests_answered += 1

  def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
    """A request that broke (e.g. its client left) is logged in one line, not a traceback."""
    logging.warning("Request from %s failed: %r", client_address[0], sys.exc_info()[1])


class _Handler(http.server.BaseHTTPRequestHandler):
  """One request: routes, checks the key and the rate, injects the next fault, runs the model."""

  server: InferenceServer
  protocol_version = "HTTP/1.1"

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    """One INFO line per request: the client, the request line and the status, no headers."""
    logging.info("%s %s", self.address_string(), format % args)

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    path = urllib.parse.urlsplit(self.path).path.rstrip("/")
    if path in ("/v2/health/ready", "/v2/health/live"):
      self._reply(200, {path.rsplit("/", 1)[1]: True})
      return
    route = self._admit(path)
    if route is None:
      return
    if route == "":
      self._reply(200, self.server.model.metadata(self.server.model_name))
    elif route == "/ready":
      self._reply(200, {"name": self.server.model_name, "ready": True})
    else:
      self._error(404, f"No GET {route} for a model; use /v2/models/NAME or its /ready.")

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    body = self._read_body()
    if body is None:
      return
    route = self._admit(urllib.parse.urlsplit(self.path).path)
    if route is None:
      return
    if route != "/infer":
      self._error(404, f"No POST {route or '/'} for a model; use /v2/models/NAME/infer.")
      return
    fault = self.server.next_fault()
    fault = None if fault == "ok" else fault
    if fault in ("500", "503", "429", "malformed", "drop"):
      self._fault(fault)
      return
    self._infer(body, fault)

  def _read_body(self) -> bytes | None:
    """The request body; None once a 411/413 has been sent."""
    length = self.headers.get("Content-Length")
    if length is None or not length.isdigit():
      self.close_connection = True
      self._error(411, "Send the body with a Content-Length header.")
      return None
    if int(length) > MAX_BODY_BYTES:
      self.close_connection = True
      self._error(413, f"The body is over {MAX_BODY_BYTES} bytes; send fewer images at once.")
      return None
    return self.rfile.read(int(length))

  def _admit(self, path: str) -> str | None:
    """What follows the model in ``path`` ('', '/infer', ...); None once a refusal is sent."""
    if not self.server.authorized(self.headers.get("Authorization")):
      self._error(401, "Missing or wrong API key: send the header 'Authorization: Bearer KEY'.",
                  headers={"WWW-Authenticate": "Bearer"})
      return None
    match = _MODEL_ROUTE.match(path)
    if match is None:
      self._error(404, f"No endpoint {path}; this server has /v2/health/ready and "
                  f"/v2/models/{self.server.model_name}[/infer].")
      return None
    name = urllib.parse.unquote(match["name"])
    if name != self.server.model_name:
      self._error(404, f"No model named {name!r}; this server has {self.server.model_name!r}.")
      return None
    wait = self.server.wait_for_token()
    if wait > 0:
      self._error(429, "Too many requests; retry after the Retry-After header's seconds.",
                  headers={"Retry-After": f"{wait:.3f}"})
      return None
    return match["action"] or ""

  def _infer(self, body: bytes, fault: str | None) -> None:
    """Runs the model on the request; "timeout", "wrong_shape" and "nan" spoil the reply."""
    try:
      request = loads_strict(body, source="The request")
      feeds = self.server.model.feeds(request)
      names = self.server.model.wanted_outputs(request)
    except ValueError as error:
      self._error(400, str(error))
      return
    try:
      outputs = self.server.model.run(names, feeds)
    except InvalidArgument as error:
      self._error(400, f"The model refused the input: {error}")
      return
    except Exception as error:  # pylint: disable=broad-except
      self._error(500, f"The model failed: {type(error).__name__}: {error}")
      return
    if fault == "timeout":
      self.close_connection = True
      self.server.delay()
    elif fault == "wrong_shape":
      outputs = {name: value[:-1] for name, value in outputs.items()}
    elif fault == "nan":
      first = names[0]
      outputs[first] = outputs[first].astype(np.float32)
      outputs[first].flat[0] = np.nan
    reply = {"model_name": self.server.model_name,
             "outputs": [encode_output(name, value) for name, value in outputs.items()]}
    if "id" in request:
      reply["id"] = request["id"]
    if fault is None:
      self.server.count_answer()  # Before the reply, so a client that has it sees the count.
    self._reply(200, reply)

  def _fault(self, fault: str) -> None:
    """Answers an injected "500", "503", "429", "malformed" or "drop"."""
    if fault == "drop":
      self.close_connection = True
      logging.info("%s dropped %r (injected fault)", self.address_string(), self.requestline)
    elif fault == "malformed":
      self._reply(200, body=b"<html>upstream hiccup", content_type="text/html")
    elif fault == "429":
      self._error(429, "Too many requests (injected fault).",
                  headers={"Retry-After": f"{self.server.fault_retry_after_s:g}"})
    else:
      self._error(int(fault), f"Injected fault {fault}.")

  def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    self._reply(status, {"error": message}, headers=headers)

  def _reply(self, status: int, payload: Any = None, *, body: bytes | None = None,
             content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
    data = body if body is not None else json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    self.end_headers()
    self.wfile.write(data)


def make_server(onnx_path: str | Path, *, model_name: str, host: str = "127.0.0.1",
                port: int = 0, api_key: str | None = None,
                max_requests_per_s: float | None = None,
                faults: Iterable[str] | None = None) -> InferenceServer:
  """A server of the ONNX file at ``onnx_path`` bound to ``host:port`` (0: a free port).

  Call ``.serve_forever()`` (or ``.serve_in_background()``), then ``.close()``.
  """
  model = OnnxModel(onnx_path)
  return InferenceServer((host, port), model, model_name=model_name, api_key=api_key,
                         max_requests_per_s=max_requests_per_s, faults=faults)
