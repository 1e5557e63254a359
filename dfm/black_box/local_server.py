"""A real HTTP server for any ONNX model in the Open Inference Protocol (KServe V2).

It is what :class:`dfm.black_box.http_client.HttpBlackBox` talks to in tests and on a desk:
the standard library's threading HTTP server in front of an onnxruntime session::

  GET  /v2/health/ready              -> 200 {"ready": true}          (also /v2/health/live)
  GET  /v2/models/{name}             -> 200 metadata: inputs and outputs with their
                                        datatype and shape (-1 for a symbolic size)
  POST /v2/models/{name}/infer       -> 200 {"model_name", "outputs": [...]}
  an unknown model -> 404, a bad body -> 400, both as {"error": "..."}

What it admits, in this order, so that a hostile client costs little:

- at most ``max_concurrent`` connections at once; one more is answered 503 with
  ``Retry-After: 1`` from the accepting thread, nothing of it read;
- with ``api_key`` every ``/v2/models`` request needs ``Authorization: Bearer KEY``,
  else 401 before any body is read (so are an unknown path or model, 404);
- a ``Content-Length`` of at most :func:`~dfm.black_box.server_limits.body_cap` bytes,
  ``max_batch`` images of the model's input as JSON numbers (411 without one, 413 past it);
- with ``max_requests_per_s`` a token bucket (``burst`` tokens at most, full at start)
  answers 429 when empty, ``Retry-After`` in whole seconds (rounded up, at least 1);
- the request line and headers must arrive within ``read_timeout_s`` (else the
  connection is closed), then the body within as long again (else 408, and closed);
- a batch over ``max_batch`` images is refused with 413 before any number is decoded;
  the numbers are decoded straight into the model's float32 (or float64).

A refusal sent before the body is read closes the connection, after discarding for at
most :data:`LINGER_S` what the client still sends (so its reply is not lost to a reset).
Error replies give a fixed reason per status, or name what the model takes; they never
echo the request's path, headers or body.

With ``declare_metadata=False`` the metadata lists no tensors (``"inputs": [],
"outputs": []``, as MLServer answers by default), which the protocol allows.

Faults are injected for resilience tests: ``server.faults`` is a queue, and each
infer request (past the key and the rate limit) takes the next fault, if any, in
:data:`dfm.black_box.server_limits.FAULTS`: "500", "503", "429" (``Retry-After`` of
``fault_retry_after_s``, rounded up to whole seconds), "timeout" (answers after
``fault_delay_s``), "malformed" (200, not JSON), "wrong_shape" (one score row short),
"wrong_name" (the outputs named by position, ``output_0``, ...), "nan" (a ``NaN``
score), "drop" (the connection closed unanswered), or "ok" (a good answer, to place
faults after some). ``server.requests_answered`` counts the good answers.

Example::

  server = make_server("model.onnx", model_name="gender", port=0, api_key="secret",
                       max_batch=256, max_concurrent=8, read_timeout_s=30.0)
  server.serve_in_background()
  server.url                       # "http://127.0.0.1:41234"
  server.max_body_bytes            # 256 images of the model's input, as JSON
  server.faults.append("503")      # the next infer request answers 503
  server.close()
"""
import hmac
import http.server
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from dfm.black_box.protocol import loads_strict
from dfm.black_box.served_model import BatchTooLarge, OnnxModel, encode_output
from dfm.black_box.server_limits import FaultQueue, TokenBucket, body_cap, retry_after

# After a refusal sent before the body was read, what the client still sends is
# discarded for at most this long before the connection is closed.
LINGER_S = 1.0
_CHUNK_BYTES = 2**20
_MODEL_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?(?P<action>/[a-z]+)?$")
# The reason sent with each status when there is nothing more to say; none quotes the request.
REASONS = {
    400: "The request is malformed.",
    401: "Missing or wrong API key: send the header 'Authorization: Bearer KEY'.",
    404: "No such endpoint.",
    405: "This server answers GET and POST only.",
    408: "The request did not arrive within the server's read timeout.",
    411: "Send the body with a Content-Length header (no Transfer-Encoding).",
    413: "The request is too large for this server.",
    414: "The request line is too long.",
    429: "Too many requests; retry after the Retry-After header's seconds.",
    431: "The request headers are too large.",
    500: "The model failed on this input.",
    501: "This server answers GET and POST only.",
    503: "The server is busy; retry after the Retry-After header's seconds.",
}


class InferenceServer(http.server.ThreadingHTTPServer):
  """The threading HTTP server holding the model, its limits and the faults."""

  daemon_threads = True

  def __init__(self, address: tuple[str, int], model: OnnxModel, *, model_name: str,
               api_key: str | None = None, max_requests_per_s: float | None = None,
               burst: int = 1, max_batch: int = 256, max_concurrent: int = 8,
               read_timeout_s: float = 30.0, faults: Iterable[str] | None = None,
               declare_metadata: bool = True) -> None:
    _check_limits(max_batch, max_concurrent, read_timeout_s, burst)
    self.model, self.model_name = model, model_name
    self.declare_metadata = declare_metadata
    self.max_batch, self.read_timeout_s = max_batch, read_timeout_s
    self.max_body_bytes = body_cap(model.item_shapes(), max_batch)
    self.faults = FaultQueue()
    self.faults.extend(faults or ())
    self.fault_delay_s = 60.0
    self.fault_retry_after_s = 1.0
    self.requests_answered = 0
    self._api_key = api_key or None
    self._bucket = TokenBucket(max_requests_per_s, burst) if max_requests_per_s else None
    self._slots = threading.BoundedSemaphore(max_concurrent)
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

  def process_request(self, request: Any, client_address: Any) -> None:
    """A thread for the connection if one of ``max_concurrent`` slots is free, else 503."""
    if not self._slots.acquire(blocking=False):
      self._turn_away(request, client_address)
      return
    try:
      super().process_request(request, client_address)
    except BaseException:
      self._slots.release()
      raise

  def process_request_thread(self, request: Any, client_address: Any) -> None:
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()

  def _turn_away(self, request: socket.socket, client_address: Any) -> None:
    """503 with ``Retry-After: 1`` written from the accepting thread; nothing is read but
    what has already arrived (discarded, so that the close does not reset the reply)."""
    body = json.dumps({"error": REASONS[503]}).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    try:
      request.setblocking(False)
      request.send(head.encode() + body)
      for _ in range(16):
        if not request.recv(_CHUNK_BYTES):
          break
    except OSError:
      pass
    logging.warning("%s turned away with 503: all max_concurrent connections are busy.",
                    client_address[0])
    self.shutdown_request(request)

  def authorized(self, header: str | None) -> bool:
    if self._api_key is None:
      return True
    expected = f"Bearer {self._api_key}".encode()
    return hmac.compare_digest((header or "").encode("latin-1", "replace"), expected)

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


def _check_limits(max_batch: int, max_concurrent: int, read_timeout_s: float,
                  burst: int) -> None:
  if max_batch < 1:
    raise ValueError(f"max_batch must be at least 1, got {max_batch}.")
  if max_concurrent < 1:
    raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}.")
  if not read_timeout_s > 0:
    raise ValueError(f"read_timeout_s must be positive, got {read_timeout_s}.")
  if burst < 1:
    raise ValueError(f"burst must be at least 1, got {burst}.")


class _Handler(http.server.BaseHTTPRequestHandler):
  """One request: routes, checks the key, the size and the rate, injects the next fault,
  runs the model."""

  server: InferenceServer
  protocol_version = "HTTP/1.1"
  _body_pending = False  # A POST whose body is not read yet: a refusal closes the connection.

  def setup(self) -> None:
    self.timeout = self.server.read_timeout_s  # Every read on the socket, headers too.
    super().setup()

  def handle_one_request(self) -> None:
    """One request, whose request line and headers must all arrive within
    ``read_timeout_s`` (a watchdog cuts a client that sends them a byte at a time)."""
    self._watchdog = threading.Timer(self.server.read_timeout_s, self._cut_off)
    self._watchdog.daemon = True
    self._watchdog.start()
    try:
      super().handle_one_request()
    finally:
      self._watchdog.cancel()

  def parse_request(self) -> bool:
    admitted = super().parse_request()  # The headers are in: the body has its own deadline.
    self._watchdog.cancel()
    return admitted

  def _cut_off(self) -> None:
    logging.warning("%s sent no complete request within read_timeout_s; closing.",
                    self.client_address[0])
    try:
      self.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    """One INFO line per request: the client, the request line and the status, no headers."""
    logging.info("%s %s", self.address_string(), format % args)

  def send_error(self, code: int, message: str | None = None,
                 explain: str | None = None) -> None:
    """http.server's own refusals (a bad request line, an unknown method, ...): the fixed
    reason of ``code``, not ``message``, which may quote the request."""
    del message, explain
    self.close_connection = True
    self.request_version = "HTTP/1.0"  # Unparsed (HTTP/0.9) would send no status line.
    self._error(code)

  def handle_expect_100(self) -> bool:
    """``Expect: 100-continue`` is answered only once the request is admitted (in
    :meth:`_read_body`), so a refused client is never invited to send its body."""
    return True

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    path = urllib.parse.urlsplit(self.path).path.rstrip("/")
    if path in ("/v2/health/ready", "/v2/health/live"):
      self._reply(200, {path.rsplit("/", 1)[1]: True})
      return
    route = self._admit(path)
    if route is None or self._rate_limited():
      return
    if route == "":
      self._reply(200, self.server.model.metadata(self.server.model_name,
                                                  declare=self.server.declare_metadata))
    elif route == "/ready":
      self._reply(200, {"name": self.server.model_name, "ready": True})
    else:
      self._error(404, self._endpoints())

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    self._body_pending = True
    route = self._admit(urllib.parse.urlsplit(self.path).path)
    if route is None:
      return
    if route != "/infer":
      self._error(404, self._endpoints())
      return
    length = self._content_length()
    if length is None or self._rate_limited():
      return
    body = self._read_body(length)
    if body is None:
      return
    fault = self.server.next_fault()
    fault = None if fault == "ok" else fault
    if fault in ("500", "503", "429", "malformed", "drop"):
      self._fault(fault)
      return
    self._infer(body, fault)

  def _admit(self, path: str) -> str | None:
    """What follows the model in ``path`` ('', '/infer', ...); None once a 401 or 404 is
    sent."""
    if not self.server.authorized(self.headers.get("Authorization")):
      self._error(401, headers={"WWW-Authenticate": "Bearer"})
      return None
    match = _MODEL_ROUTE.match(path)
    if match is None:
      self._error(404, self._endpoints())
      return None
    if urllib.parse.unquote(match["name"]) != self.server.model_name:
      self._error(404, f"No such model; this server has {self.server.model_name!r}.")
      return None
    return match["action"] or ""

  def _endpoints(self) -> str:
    name = self.server.model_name
    return (f"No such endpoint; this server has GET /v2/health/ready, GET /v2/models/{name} "
            f"and POST /v2/models/{name}/infer.")

  def _rate_limited(self) -> bool:
    """True once a 429 is sent (``Retry-After`` in whole seconds, at least 1)."""
    wait = self.server.wait_for_token()
    if wait > 0:
      self._error(429, headers={"Retry-After": retry_after(wait)})
    return wait > 0

  def _content_length(self) -> int | None:
    """The body's declared size; None once a 411 or 413 is sent."""
    length = self.headers.get("Content-Length", "")
    if self.headers.get("Transfer-Encoding") or not (length.isascii() and length.isdigit()):
      self._error(411)
      return None
    if int(length) > self.server.max_body_bytes:
      self._error(413, f"The body is over this server's limit of {self.server.max_body_bytes} "
                  f"bytes (max_batch={self.server.max_batch} images of the model's input); "
                  "send fewer images per request.")
      return None
    return int(length)

  def _read_body(self, length: int) -> bytearray | None:
    """The body, read into one buffer within ``read_timeout_s``; None once a 408 is sent
    or the client left."""
    if self.headers.get("Expect", "").lower() == "100-continue":
      self.send_response_only(100)
      self.end_headers()
    body, deadline = bytearray(length), time.monotonic() + self.server.read_timeout_s
    view, done = memoryview(body), 0
    try:
      while done < length:
        left = deadline - time.monotonic()
        if left <= 0:
          raise TimeoutError
        self.connection.settimeout(left)
        count = self.rfile.readinto1(view[done:done + _CHUNK_BYTES])
        if not count:
          self.close_connection = True
          return None
        done += count
    except TimeoutError:
      self._error(408)
      return None
    finally:
      view.release()
      self.connection.settimeout(self.server.read_timeout_s)
    self._body_pending = False
    return body

  def _infer(self, body: bytearray, fault: str | None) -> None:
    """Runs the model on the request; "timeout", "wrong_shape", "wrong_name" and "nan"
    spoil the reply."""
    try:
      request = loads_strict(body, source="The request")
    except ValueError:
      self._error(400, "The body is not JSON (UTF-8, no NaN or Infinity).")
      return
    finally:
      body.clear()  # Its bytes are freed now, not when the request ends.
    try:
      feeds = self.server.model.feeds(request, max_batch=self.server.max_batch)
      names = self.server.model.wanted_outputs(request)
    except BatchTooLarge as error:
      self._error(413, str(error))
      return
    except ValueError as error:
      self._error(400, str(error))
      return
    request_id = request.get("id")
    del request  # The parsed numbers are freed before the model runs.
    try:
      outputs = self.server.model.run(names, feeds)
    except InvalidArgument as error:
      logging.warning("The model refused an input: %s", error)
      self._error(400, "The model refused the input; its metadata says what it takes.")
      return
    except Exception as error:  # pylint: disable=broad-except
      logging.warning("The model failed: %s: %s", type(error).__name__, error)
      self._error(500)
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
    if isinstance(request_id, str):
      reply["id"] = request_id  # The protocol's request id, returned as it asks.
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
      self._error(429, headers={"Retry-After": retry_after(self.server.fault_retry_after_s)})
    else:
      self._error(int(fault), f"Injected fault {fault}.")

  def _error(self, status: int, reason: str | None = None,
             headers: dict[str, str] | None = None) -> None:
    """``{"error": reason}`` (the status's fixed reason by default); before a POST's body
    is read, the connection is then closed (see :meth:`_linger`)."""
    pending = self._body_pending
    if pending:
      self.close_connection = True
    self._reply(status, {"error": reason or REASONS.get(status, "Refused.")}, headers=headers)
    if pending:
      self._linger()

  def _linger(self) -> None:
    """Discards, for at most LINGER_S and up to the body cap, what the client still sends,
    so that closing with its body unread does not reset the connection under the reply."""
    try:
      self.connection.shutdown(socket.SHUT_WR)
      deadline, discarded = time.monotonic() + LINGER_S, 0
      while discarded <= self.server.max_body_bytes:
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self.connection.settimeout(left)
        chunk = self.rfile.read1(_CHUNK_BYTES)
        if not chunk:
          break
        discarded += len(chunk)
    except OSError:
      pass

  def _reply(self, status: int, payload: Any = None, *, body: bytes | None = None,
             content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
    data = body if body is not None else json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    if self.close_connection:
      self.send_header("Connection", "close")
    self.end_headers()
    self.wfile.write(data)


def make_server(onnx_path: str | Path, *, model_name: str, host: str = "127.0.0.1",
                port: int = 0, api_key: str | None = None,
                max_requests_per_s: float | None = None, burst: int = 1,
                max_batch: int = 256, max_concurrent: int = 8, read_timeout_s: float = 30.0,
                faults: Iterable[str] | None = None,
                declare_metadata: bool = True) -> InferenceServer:
  """A server of the ONNX file at ``onnx_path`` bound to ``host:port`` (0: a free port);
  the limits are described in the module docstring; ``declare_metadata=False`` lists no
  inputs or outputs in its metadata.

  Call ``.serve_forever()`` (or ``.serve_in_background()``), then ``.close()``.

  Raises:
    ValueError: the file is not an ONNX model, or a limit is out of range.
    OSError: the address cannot be bound.
  """
  model = OnnxModel(onnx_path)
  return InferenceServer((host, port), model, model_name=model_name, api_key=api_key,
                         max_requests_per_s=max_requests_per_s, burst=burst,
                         max_batch=max_batch, max_concurrent=max_concurrent,
                         read_timeout_s=read_timeout_s, faults=faults,
                         declare_metadata=declare_metadata)
