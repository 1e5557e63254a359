"""A model behind HTTP, spoken to in the Open Inference Protocol (KServe V2), as a black box.

:class:`HttpBlackBox` prepares images with the config's ``InputSpec``, sends them in
requests of ``batch_size`` images (codec: :mod:`dfm.black_box.protocol`), and retries
what may pass on a second try, up to ``max_retries`` times: a 429 (or 5xx) after its
``Retry-After`` seconds, in full, if it sends one; other 5xx, dropped connections and
timeouts after ``min(backoff_s * 2**attempt, max_backoff_s)``. It refuses at once what
will not pass (other 4xx, malformed replies, wrong shapes, NaN).

A call's ``Spent`` counts answered requests as ``calls`` with their ``images``, and
every failed attempt, retried or not, as a ``failure``; an exception leaving
:meth:`HttpBlackBox.score` carries what its call spent as ``error.spent``. The API key
is read from an environment variable and never shown in a message or a log line; it
is sent over plain ``http://`` only to this machine (``localhost``, 127.0.0.0/8,
``::1``) unless ``allow_plain_http_key`` says the network is trusted, else over
``https://``.

On load (``check_metadata``, ``config.black_box.check_metadata``) the model's
metadata is read and what it declares is checked against the config; a server
that declares no inputs or outputs (the protocol allows it) is accepted. The first
reply then checks what was not: the output names, the ``[N, num_classes]`` shape
(or top-k ``[N, k]``) and a numeric datatype, each refusal naming what came back.
The first reply also decides the output kind from its numbers (``auto``:
probabilities if every row is in [0, 1] and sums to 1, else logits) or refuses a
declared kind they contradict. No request is sent for this beyond the run's own,
so every image it looks at is counted in the run's ``Spent``.

Example::

  model = HttpBlackBox("http://127.0.0.1:8500", "gender", spec, input_name="images",
                       output_name="probabilities", output_kind="auto",
                       num_classes=2, api_key_env="DFM_API_KEY")
  reply = model.score(images)   # reply.spent: Spent(calls=..., images=N, failures=...)
  model.output_kind             # "probabilities", decided by the first reply
"""
import dataclasses
import http.client
import ipaddress
import math
import os
import time
import urllib.parse
from collections.abc import Callable

import numpy as np
from absl import logging

from dfm.black_box.base import BlackBox, Reply, Spent, check_probabilities, with_spent
from dfm.models.input_spec import InputSpec
from dfm.black_box.protocol import (Declared, check_metadata, infer_body, loads_strict,
                                    parse_infer_reply, server_said)
from dfm.black_box.shapes import check_output_kind, check_top_k, decide_output_kind, softmax


class BlackBoxUnavailable(RuntimeError, ValueError):
  """The service did not answer after every retry (5xx, 429, timeouts, dropped connections).

  A ValueError too (as a wrong URL or port is bad input), so an entrypoint ends with its
  one-line message rather than a traceback (``experiments.cli.exit_on_bad_input``).
  """


@dataclasses.dataclass
class _Tally:
  """What one ``score`` call has spent so far."""

  calls: int = 0
  images: int = 0
  failures: int = 0

  def spent(self) -> Spent:
    return Spent(self.calls, self.images, self.failures)


def retry_after_s(value: str | None) -> float | None:
  """A ``Retry-After`` header in seconds, or None if absent, a date or not finite.

  HTTP sends whole seconds (``"2"``); a fraction (``"0.25"``), which some servers send,
  is read as it is.

  Example::

    retry_after_s("2"), retry_after_s("0.25")  # (2.0, 0.25)
  """
  try:
    seconds = float(value) if value is not None else None
  except ValueError:
    return None
  return max(0.0, seconds) if seconds is not None and math.isfinite(seconds) else None


def is_loopback(host: str) -> bool:
  """Whether ``host`` is this machine: ``localhost``, 127.0.0.0/8 or ``::1``.

  Example::

    is_loopback("127.0.0.2"), is_loopback("::1"), is_loopback("10.0.0.5")  # True True False
  """
  if host.lower().rstrip(".") == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def check_key_transport(url: str, has_key: bool, allow_plain_http_key: bool) -> None:
  """Refuses to send an API key over plain ``http://`` to a host that is not this machine.

  Example::

    check_key_transport("https://models.example.com", True, False)   # passes
    check_key_transport("http://127.0.0.1:8500", True, False)        # passes: loopback

  Raises:
    ValueError: the key would travel unencrypted; the message names both fixes.
  """
  parts = urllib.parse.urlsplit(url)
  if not has_key or parts.scheme != "http" or allow_plain_http_key or is_loopback(
      parts.hostname or ""):
    return
  raise ValueError(
      f"config.black_box.url={url!r} is plain http:// to {parts.hostname}, which is not this "
      "machine, so the API key (config.black_box.api_key_env) would travel unencrypted: use an "
      "https:// URL, or set config.black_box.allow_plain_http_key=True if the network is "
      "trusted.")


def read_api_key(env: str, *, field: str = "config.black_box.api_key_env") -> str | None:
  """The API key held in the environment variable ``env`` (None when ``env`` is empty).

  Example::

    read_api_key("DFM_API_KEY")  # the key; read_api_key("") is None

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
  """A classifier served over HTTP in the Open Inference Protocol, queried with retries.

  The model's metadata is checked against the config on load (``check_metadata``;
  False sends no metadata request). ``declared_kind`` is the configured output kind
  (maybe ``auto``); ``output_kind`` the kind decided by the first reply (None before).
  """

  def __init__(self, url: str, model_name: str, spec: InputSpec, *, input_name: str,
               output_name: str, output_kind: str, num_classes: int, classes_name: str = "",
               batch_size: int = 64,
               api_key_env: str = "", timeout_s: float = 30.0, max_retries: int = 5,
               backoff_s: float = 0.5, max_backoff_s: float = 30.0,
               check_metadata: bool = True, allow_plain_http_key: bool = False,
               sleep: Callable[[float], None] = time.sleep) -> None:
    check_output_kind(output_kind)
    _check_settings(batch_size, timeout_s, max_retries, backoff_s, max_backoff_s)
    if classes_name:
      check_top_k([None, None], [None, None], output_kind, num_classes, source=url)
    self._parts = _split_url(url)
    self.url, self.model_name, self.spec = url.rstrip("/"), model_name, spec
    self.num_classes = num_classes
    self.input_name, self.output_name, self.declared_kind = input_name, output_name, output_kind
    self.classes_name, self.partial = classes_name, bool(classes_name)
    # A top-k reply can only be probabilities; otherwise the first reply decides.
    self.output_kind: str | None = "probabilities" if self.partial else None
    self.check_metadata, self.declared = check_metadata, Declared(inputs=False, outputs=False)
    self._replied = False
    self.batch_size, self.api_key_env, self.timeout_s = batch_size, api_key_env, timeout_s
    self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
    self._sleep = sleep
    self.__key = read_api_key(api_key_env)
    check_key_transport(self.url, self.__key is not None, allow_plain_http_key)
    self._model_path = f"/v2/models/{urllib.parse.quote(model_name, safe='')}"
    self._source = f"The model {model_name!r} at {self.url}"
    if check_metadata:
      self.declared = self.check_model()

  def __repr__(self) -> str:
    return (f"HttpBlackBox(url={self.url!r}, model_name={self.model_name!r}, "
            f"api_key_env={self.api_key_env!r}, batch_size={self.batch_size})")

  def check_model(self) -> Declared:
    """Reads the model's metadata and checks what it declares against the config (see
    :func:`dfm.black_box.protocol.check_metadata`); spends nothing on any ledger.

    Returns which of inputs and outputs the metadata declared; the first reply
    checks the outputs it did not.
    """
    body = self._request("GET", self._model_path, None, _Tally())
    try:
      declared = check_metadata(loads_strict(body, source=self._source), spec=self.spec,
                                input_name=self.input_name, output_name=self.output_name,
                                num_classes=self.num_classes, source=self._source,
                                classes_name=self.classes_name, output_kind=self.declared_kind)
    except ValueError as error:
      raise ValueError(self._redact(str(error))) from None
    for what, given in declared._asdict().items():
      if not given:
        logging.info("%s: its metadata declares no %s; the first reply is checked instead.",
                     self._redact(self._source), what)
    return declared

  def calls_for(self, num_images: int) -> int:
    """Requests that ``num_images`` images take: one per ``batch_size``."""
    return -(-num_images // self.batch_size)

  def _score(self, images: np.ndarray) -> Reply:
    tensor, tally = self.spec.prepare(images), _Tally()
    try:
      parts = [self._infer(tensor[start:start + self.batch_size], tally)
               for start in range(0, len(tensor), self.batch_size)]
    except BaseException as error:  # Ctrl-C too: what was answered stays spent.
      with_spent(error, tally.spent())
      raise
    return Reply(np.concatenate(parts), tally.spent())

  def _infer(self, tensor: np.ndarray, tally: _Tally) -> np.ndarray:
    """One request: ``tensor`` (a batch) in, checked probabilities out, tallied."""
    outputs = [self.output_name, *([self.classes_name] if self.partial else [])]
    body = self._request("POST", f"{self._model_path}/infer",
                         infer_body(self.input_name, tensor, outputs), tally)
    try:
      probabilities = self._read_reply(body, len(tensor))
    except ValueError as error:
      tally.failures += 1
      logging.warning("%s: refusing a reply: %s", type(self).__name__, self._redact(str(error)))
      raise ValueError(self._redact(str(error))) from None
    tally.calls, tally.images = tally.calls + 1, tally.images + len(tensor)
    return probabilities

  def _read_reply(self, body: bytes, num_images: int) -> np.ndarray:
    """The checked probabilities of an infer reply. Until one is accepted, a reply the
    metadata did not vouch for is refused with what to set, and the first accepted
    one decides the output kind (or checks the declared one)."""
    try:
      scores = parse_infer_reply(body, output_name=self.output_name, num_images=num_images,
                                 num_classes=self.num_classes, source=self._source,
                                 classes_name=self.classes_name)
    except ValueError as error:
      if self._replied or self.declared.outputs:
        raise
      raise ValueError(f"{error} {self._unchecked_outputs()}") from None
    if self.output_kind is None:
      self.output_kind = self._decide(scores)
    if self.output_kind == "logits":
      scores = softmax(scores)
    probabilities = check_probabilities(scores, num_images, self.num_classes,
                                        source=self._source, partial=self.partial)
    self._replied = True
    return probabilities

  def _unchecked_outputs(self) -> str:
    """Why a first reply is where the outputs are checked, and what to set."""
    why = ("With config.black_box.check_metadata=False no metadata is read" if not
           self.check_metadata else "The server's metadata declares no outputs")
    names = [self.output_name, *([self.classes_name] if self.partial else [])]
    shape = f"[N, k] (k <= {self.num_classes})" if self.partial else f"[N, {self.num_classes}]"
    fields = "output_name and classes_name" if self.partial else "output_name"
    return (f"{why}, so this first reply is where the outputs are checked: it must hold "
            f"{names} as {shape} numbers; set config.black_box.{fields} and "
            "config.model.num_classes to what the server answers.")

  def _decide(self, scores: np.ndarray) -> str:
    """The output kind the first reply's ``scores`` show; a declared kind must agree."""
    source = f"the model {self.model_name!r} at {self.url}"
    seen = f"in its first reply ({len(scores)} images)"
    kind = decide_output_kind(scores, self.declared_kind, source=source, seen=seen)
    if self.declared_kind == "auto":
      print(f"config.black_box.output_kind='auto': {source} answers {kind} {seen}.",
            flush=True)
    logging.info("HttpBlackBox: %s answers %s %s.", source, kind, seen)
    return kind

  def _request(self, method: str, path: str, body: bytes | None, tally: _Tally) -> bytes:
    """The body of a 200 reply to ``method path``, after the retry policy; every failed
    attempt is tallied.

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
          self._fail(method, path, attempt, problem, None, tally)
          raise ValueError(self._refusal(status, reply))
        wait = self._wait(retry_after, attempt)
      self._fail(method, path, attempt, problem, wait if attempt + 1 < attempts else None, tally)
      if attempt + 1 < attempts:
        self._sleep(wait)
    if problem.startswith("ConnectionRefusedError"):
      advice = ("Nothing listens there: start the server (e.g. python -m "
                "experiments.serve_model) or fix config.black_box.url.")
    else:
      advice = "Try again later or raise config.black_box.max_retries."
    raise BlackBoxUnavailable(
        f"{method} {self.url}{path} failed {attempts} times (last: {self._redact(problem)}); the "
        f"service is unavailable. {advice}")

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
      unsent = _send_request(connection, method, prefix + path, body, headers)
      try:
        response = connection.getresponse()
      except (OSError, http.client.HTTPException):
        if unsent is not None:
          raise unsent from None
        raise
      return response.status, retry_after_s(response.getheader("Retry-After")), response.read()
    finally:
      connection.close()

  def _backoff(self, attempt: int) -> float:
    return min(self.backoff_s * 2 ** attempt, self.max_backoff_s)

  def _wait(self, retry_after: float | None, attempt: int) -> float:
    """Seconds before retrying a 429 or 5xx: its Retry-After in full (the server asked
    for it; retrying sooner only earns another 429), else the capped backoff."""
    return self._backoff(attempt) if retry_after is None else retry_after

  def _fail(self, method: str, path: str, attempt: int, problem: str, wait: float | None,
            tally: _Tally) -> None:
    tally.failures += 1
    then = f"retrying in {wait:.3g} s" if wait is not None else "giving up"
    logging.warning("%s: %s %s%s failed (attempt %d of %d): %s; %s.", type(self).__name__,
                    method, self.url, path, attempt + 1, self.max_retries + 1,
                    self._redact(problem), then)

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
    if status == 413:
      return (f"{said}. The request is larger than the server takes: lower "
              "config.black_box.batch_size.")
    if status == 404:
      return (f"{said}. There is no model {self.model_name!r} there: check "
              "config.black_box.model_name and config.black_box.url.")
    return (f"{said}. The server refused the request: check config.black_box.input_name, "
            "config.black_box.input and config.black_box.output_name against the model.")

  def _redact(self, text: str) -> str:
    return text.replace(self.__key, "<API key>") if self.__key else text


def _send_request(connection: http.client.HTTPConnection, method: str, path: str,
                  body: bytes | None, headers: dict[str, str]) -> OSError | None:
  """Sends the request; a connection the server closed mid-body is returned, not raised,
  since a server may answer (401, 413, 503) before reading a body and close: that answer
  is still there to read."""
  try:
    connection.request(method, path, body=body, headers=headers)
  except (BrokenPipeError, ConnectionResetError) as error:
    return error
  return None


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
