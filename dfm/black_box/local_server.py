"""A real HTTP server for any ONNX model in the Open Inference Protocol (KServe V2).

It is what :class:`dfm.black_box.http_client.HttpBlackBox` talks to in tests and on a desk:
the standard library's threading HTTP server in front of an onnxruntime session::

  GET  /v2/health/ready              -> 200 {"ready": true}          (also /v2/health/live)
  GET  /v2/models/{name}             -> 200 metadata: inputs and outputs with their
                                        datatype and shape (-1 for a symbolic size)
  POST /v2/models/{name}/infer       -> 200 {"model_name", "outputs": [...]}
  an unknown model -> 404, a bad body -> 400, both as {"error": "..."}

With ``api_key`` every ``/v2/models`` request needs ``Authorization: Bearer KEY``
(else 401); with ``max_requests_per_s`` a token bucket (burst 1) answers 429 with a
``Retry-After`` header in seconds when requests come faster. With
``declare_metadata=False`` the metadata lists no tensors (``"inputs": [], "outputs":
[]``, as MLServer answers by default), which the protocol allows.

Faults are injected for resilience tests: ``server.faults`` is a queue, and each
infer request (past the key and the rate limit) takes the next fault, if any, in
:data:`dfm.black_box.server_limits.FAULTS`: "500", "503", "429" (``Retry-After: fault_retry_after_s``),
"timeout" (answers after ``fault_delay_s``), "malformed" (200, not JSON),
"wrong_shape" (one score row short), "wrong_name" (the outputs named by position,
``output_0``, ...), "nan" (a ``NaN`` score), "drop" (the connection closed
unanswered), or "ok" (a good answer, to place faults after some).
``server.requests_answered`` counts the good answers.

Example::

  server = make_server("model.onnx", model_name="gender", port=0, api_key="secret")
  server.serve_in_background()
  server.url                       # "http://127.0.0.1:41234"
  server.faults.append("503")      # the next infer request answers 503
  server.close()
"""
import hmac
import http.server
import json
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from dfm.black_box.protocol import loads_strict
from dfm.black_box.served_model import OnnxModel, encode_output
from dfm.black_box.server_limits import FaultQueue, TokenBucket

MAX_BODY_BYTES = 512 * 2**20
_MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?(?P<action>/[a-z]+)?$")


class InferenceServer(http.server.ThreadingHTTPServer):
  """The threading HTTP server holding the model, the key, the rate limit and the faults."""

  daemon_threads = True

  def __init__(self, address: tuple[str, int], model: OnnxModel, *, model_name: str,
               api_key: str | None = None, max_requests_per_s: float | None = None,
               faults: Iterable[str] | None = None, declare_metadata: bool = True) -> None:
    self.model, self.model_name = model, model_name
    self.declare_metadata = declare_metadata
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
      self._reply(200, self.server.model.metadata(self.server.model_name,
                                                  declare=self.server.declare_metadata))
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
    """Runs the model on the request; "timeout", "wrong_shape", "wrong_name" and "nan"
    spoil the reply."""
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
    elif fault == "wrong_name":
      outputs = {f"output_{i}": value for i, value in enumerate(outputs.values())}
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
                faults: Iterable[str] | None = None,
                declare_metadata: bool = True) -> InferenceServer:
  """A server of the ONNX file at ``onnx_path`` bound to ``host:port`` (0: a free port);
  ``declare_metadata=False`` lists no inputs or outputs in its metadata.

  Call ``.serve_forever()`` (or ``.serve_in_background()``), then ``.close()``.
  """
  model = OnnxModel(onnx_path)
  return InferenceServer((host, port), model, model_name=model_name, api_key=api_key,
                         max_requests_per_s=max_requests_per_s, faults=faults,
                         declare_metadata=declare_metadata)
