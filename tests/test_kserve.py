"""HttpBlackBox (dfm/black_box/http_client.py) against the real server
(dfm/black_box/local_server.py) on localhost.

A tiny real ONNX classifier (images [N, 3, 4, 4] -> Flatten -> Gemm -> logits ->
Softmax -> probabilities) is served from a background thread on a free port.
Faults are injected into the live server (``server.faults``); the client's sleep
is recorded instead of slept, so the retry policy is seen without waiting. What a
call spent is read from its reply (``model.score(x).spent``) or, when it fails,
from the exception (``error.spent``).
"""
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from configs import query as query_configs
from dfm.black_box import local_server, served_model, server_limits
from dfm.black_box.base import Spent, spent_of
from dfm.black_box.factory import from_config
from dfm.black_box.http_client import (BlackBoxUnavailable, HttpBlackBox, is_loopback,
                                       retry_after_s)
from dfm.models.input_spec import InputSpec
from dfm.black_box.onnx_file import open_session
from dfm.black_box.protocol import decode_tensor, loads_strict
from onnx_models import linear_classifier

SPEC = InputSpec(size=(4, 4), channels=3, channel_order="RGB", layout="NCHW", pixel_max=1.0,
                 mean=(0.0,), scale=1.0)
SECRET = "sk-test-7f3a9c-do-not-leak"
KEY_ENV = "DFM_TEST_KSERVE_KEY"


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
  """The tiny classifier with two outputs: "logits" and "probabilities"."""
  path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
  linear_classifier(path, input_shape=(3, 4, 4), num_classes=2,
                    outputs=("logits", "probabilities"))
  return path


@pytest.fixture
def serve(onnx_path):
  """``serve(**options)``: a live server of the tiny model, closed after the test."""
  servers = []

  def start(**options):
    server = local_server.make_server(onnx_path, model_name="tiny", port=0, **options)
    server.serve_in_background()
    servers.append(server)
    return server

  yield start
  for server in servers:
    server.close()


@pytest.fixture
def sleeps() -> list[float]:
  return []


@pytest.fixture
def connect(sleeps):
  """``connect(server, **overrides)``: a client whose sleeps are recorded, not slept."""
  def make(server, **overrides):
    options = dict(input_name="images", output_name="probabilities",
                   output_kind="probabilities", num_classes=2, batch_size=4, timeout_s=5.0,
                   max_retries=3, backoff_s=0.01, max_backoff_s=0.025, sleep=sleeps.append)
    options.update(overrides)
    return HttpBlackBox(server.url, options.pop("model_name", "tiny"), SPEC, **options)
  return make


def _images(count: int, seed: int = 1) -> np.ndarray:
  return np.random.default_rng(seed).uniform(size=(count, 4, 4, 3)).astype(np.float32)


def _direct(onnx_path: Path, images: np.ndarray) -> np.ndarray:
  return open_session(onnx_path).run(["probabilities"], {"images": SPEC.prepare(images)})[0]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
  """(status, headers, JSON body) of a GET, errors included."""
  try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=5) as reply:
      return reply.status, dict(reply.headers), json.loads(reply.read())
  except urllib.error.HTTPError as error:
    return error.code, dict(error.headers), json.loads(error.read())


def test_scores_equal_onnxruntime_and_spent_is_counted_per_request(serve, connect, onnx_path):
  server = serve()
  model = connect(server)
  images = _images(10)
  reply = model.score(images)
  np.testing.assert_allclose(reply.probabilities, _direct(onnx_path, images), rtol=1e-6,
                             atol=1e-7)
  assert reply.spent == Spent(calls=3, images=10, failures=0)
  assert server.requests_answered == 3
  assert model.score(images[:1]).spent == Spent(calls=1, images=1)  # Each call its own.


def test_logits_output_is_softmaxed(serve, connect, onnx_path):
  model = connect(serve(), output_name="logits", output_kind="logits")
  images = _images(3)
  np.testing.assert_allclose(model(images), _direct(onnx_path, images), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fault", ["500", "503"])
def test_server_errors_are_retried_with_capped_exponential_backoff(serve, connect, sleeps,
                                                                   onnx_path, fault):
  server = serve(faults=[fault] * 3)
  model = connect(server)
  images = _images(4)
  reply = model.score(images)
  np.testing.assert_allclose(reply.probabilities, _direct(onnx_path, images), rtol=1e-6,
                             atol=1e-7)
  assert sleeps == [0.01, 0.02, 0.025]  # backoff_s * 2**attempt, capped at max_backoff_s
  assert reply.spent == Spent(calls=1, images=4, failures=3)


def test_a_retried_request_among_several_is_one_failure(serve, connect, sleeps):
  server = serve(faults=["ok", "503"])
  reply = connect(server).score(_images(6))  # Two requests; the second answers on a retry.
  assert reply.spent == Spent(calls=2, images=6, failures=1)
  assert sleeps == [0.01] and server.requests_answered == 2


@pytest.mark.parametrize("retry_after, header", [(0.02, 1.0), (2.5, 3.0), (5.0, 5.0)])
def test_429_waits_retry_after_in_full(serve, connect, sleeps, retry_after, header):
  server = serve(faults=["429"])
  server.fault_retry_after_s = retry_after  # Sent in whole seconds, rounded up.
  reply = connect(server).score(_images(2))
  assert reply.probabilities.shape == (2, 2)
  assert sleeps == [header]  # Not capped at max_backoff_s=0.025.
  assert reply.spent == Spent(calls=1, images=2, failures=1)


@pytest.mark.parametrize("fault", ["timeout", "drop"])
def test_timeouts_and_dropped_connections_are_retried(serve, connect, sleeps, onnx_path, fault):
  server = serve(faults=[fault])
  server.fault_delay_s = 3.0
  model = connect(server, timeout_s=0.3)
  images = _images(4)
  reply = model.score(images)
  np.testing.assert_allclose(reply.probabilities, _direct(onnx_path, images), rtol=1e-6,
                             atol=1e-7)
  assert sleeps == [0.01]
  assert reply.spent == Spent(calls=1, images=4, failures=1)


@pytest.mark.parametrize("fault, message", [("malformed", "not JSON"),
                                            ("wrong_shape", r"shape \[3, 2\]; expected \[4, 2\]"),
                                            ("nan", "non-finite")])
def test_untrustworthy_replies_are_refused_at_once(serve, connect, sleeps, fault, message):
  server = serve(faults=["ok", fault])
  model = connect(server)
  with pytest.raises(ValueError, match=message) as error:
    model.score(_images(8))
  assert sleeps == []
  assert spent_of(error.value) == Spent(calls=1, images=4, failures=1)


def test_exhausted_retries_raise_unavailable_carrying_what_the_call_spent(serve, connect,
                                                                          sleeps):
  server = serve(faults=["ok", "503", "503", "503"])
  model = connect(server, max_retries=2)
  with pytest.raises(BlackBoxUnavailable, match=rf"{server.url}/v2/models/tiny/infer failed "
                     r"3 times \(last: HTTP 503") as error:
    model.score(_images(10))
  assert spent_of(error.value) == Spent(calls=1, images=4, failures=2 + 1)  # max_retries + 1
  assert sleeps == [0.01, 0.02]


def test_a_client_error_mid_call_is_not_retried_and_carries_its_failure(serve, connect,
                                                                         sleeps):
  model = connect(serve(), model_name="other", check_metadata=False)
  with pytest.raises(ValueError, match=r"HTTP 404.*config\.black_box\.model_name") as error:
    model.score(_images(2))
  assert spent_of(error.value) == Spent(failures=1) and sleeps == []


def test_an_unset_key_variable_is_named(serve, connect, monkeypatch):
  monkeypatch.delenv(KEY_ENV, raising=False)
  with pytest.raises(ValueError, match=f"{KEY_ENV}.*unset"):
    connect(serve(api_key=SECRET), api_key_env=KEY_ENV)


def test_a_missing_key_asks_for_api_key_env(serve, connect):
  with pytest.raises(ValueError, match=r"HTTP 401.*config\.black_box\.api_key_env"):
    connect(serve(api_key=SECRET))


def test_a_wrong_key_names_its_variable_and_is_not_retried(serve, connect, sleeps,
                                                           monkeypatch):
  monkeypatch.setenv(KEY_ENV, "wrong-key-123")
  with pytest.raises(ValueError, match=f"HTTP 401.*environment variable {KEY_ENV}") as error:
    connect(serve(api_key=SECRET), api_key_env=KEY_ENV)
  assert "wrong-key-123" not in str(error.value) and SECRET not in str(error.value)
  assert sleeps == []


def test_the_right_key_works_and_never_shows(serve, connect, monkeypatch, caplog, capsys):
  caplog.set_level(logging.DEBUG)
  monkeypatch.setenv(KEY_ENV, SECRET)
  server = serve(api_key=SECRET, faults=["500", "ok", "503", "503"])
  model = connect(server, api_key_env=KEY_ENV, max_retries=1)
  assert model.score(_images(4)).spent == Spent(calls=1, images=4, failures=1)
  with pytest.raises(BlackBoxUnavailable) as error:
    model.score(_images(4))
  assert spent_of(error.value) == Spent(failures=2)
  captured = capsys.readouterr()
  shown = [repr(model), str(model.__dict__.get("url")), str(error.value), caplog.text,
           captured.out, captured.err]
  assert caplog.text  # The failures and the requests were logged ...
  assert all(SECRET not in text for text in shown)  # ... without the key.


class _Clock:
  """The server's rate-limit clock; the client's sleeps are recorded and advance it."""

  def __init__(self) -> None:
    self.now, self.slept = 0.0, []

  def monotonic(self) -> float:
    return self.now

  def sleep(self, seconds: float) -> None:
    self.slept.append(seconds)
    self.now += seconds


def test_the_rate_limit_answers_429_and_the_client_waits(serve, connect, monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(server_limits, "time", clock)
  server = serve(max_requests_per_s=2)  # A token every 0.5 s, burst 1.
  url = f"{server.url}/v2/models/tiny"
  assert _get(url)[0] == 200
  status, headers, body = _get(url)
  # A token in 0.5 s, but HTTP's Retry-After is whole seconds: rounded up.
  assert status == 429 and "error" in body and headers["Retry-After"] == "1"

  # Loading and each of the two requests find no token, wait its Retry-After, then pass.
  model = connect(server, batch_size=1, max_retries=5, max_backoff_s=0.025, sleep=clock.sleep)
  assert model.score(_images(2)).spent == Spent(calls=2, images=2, failures=2)
  assert clock.slept == [1.0, 1.0, 1.0]  # Retry-After in full, not the 0.025 s backoff.


@pytest.mark.parametrize("overrides, field", [
    ({"input_name": "pixels"}, r"config\.black_box\.input_name"),
    ({"output_name": "scores"}, r"config\.black_box\.output_name"),
    ({"num_classes": 3}, r"config\.model\.num_classes=3"),
    ({"model_name": "other"}, r"HTTP 404.*config\.black_box\.model_name"),
])
def test_metadata_mismatches_name_the_config_field(serve, connect, overrides, field):
  with pytest.raises(ValueError, match=field):
    connect(serve(), **overrides)


def test_empty_metadata_is_accepted_and_scores_equal_onnxruntime(serve, connect, onnx_path):
  """MLServer's default metadata declares no tensors; the protocol allows it."""
  server = serve(declare_metadata=False)
  status, _, metadata = _get(f"{server.url}/v2/models/tiny")
  assert status == 200 and metadata["inputs"] == [] and metadata["outputs"] == []
  model = connect(server)
  assert model.declared == (False, False)
  images = _images(10)
  reply = model.score(images)
  np.testing.assert_allclose(reply.probabilities, _direct(onnx_path, images), rtol=1e-6,
                             atol=1e-7)
  assert reply.spent == Spent(calls=3, images=10, failures=0)


@pytest.mark.parametrize("overrides, faults, message", [
    ({"num_classes": 3}, [], r"tensor 'probabilities' of shape \[4, 2\]; expected \[4, 3\]"),
    ({}, ["wrong_name"], r"no output named 'probabilities' \(it has \['output_0'\]\)"),
])
def test_with_empty_metadata_the_first_reply_is_checked(serve, connect, overrides, faults,
                                                        message):
  model = connect(serve(declare_metadata=False, faults=faults), **overrides)  # Loads.
  with pytest.raises(ValueError, match=message) as error:
    model.score(_images(4))
  assert ("The server's metadata declares no outputs, so this first reply is where the outputs are "
          "checked: it must hold ['probabilities'] as [N, ") in str(error.value)
  assert "config.black_box.output_name and config.model.num_classes" in str(error.value)
  assert spent_of(error.value) == Spent(failures=1)


def test_with_empty_metadata_a_wrong_input_name_is_refused_by_the_server(serve, connect):
  model = connect(serve(declare_metadata=False), input_name="pixels")
  with pytest.raises(ValueError, match=r"HTTP 400.*no input named 'images'.*"
                     r"config\.black_box\.input_name"):
    model.score(_images(2))


def test_check_metadata_false_sends_no_metadata_request(serve, connect, onnx_path, monkeypatch):
  server = serve()
  gets, do_get = [], local_server._Handler.do_GET
  monkeypatch.setattr(local_server._Handler, "do_GET",
                      lambda handler: gets.append(handler.path) or do_get(handler))
  connect(server)
  assert gets == ["/v2/models/tiny"]
  model = connect(server, check_metadata=False)
  images = _images(5)
  np.testing.assert_allclose(model(images), _direct(onnx_path, images), rtol=1e-6, atol=1e-7)
  wrong = connect(server, check_metadata=False, num_classes=3)  # Metadata would refuse it.
  assert gets == ["/v2/models/tiny"] and wrong.declared == (False, False)
  with pytest.raises(ValueError, match=r"expected \[4, 3\]\. With config\.black_box\."
                     r"check_metadata=False no metadata is read, so this first reply"):
    wrong.score(_images(4))


@pytest.mark.parametrize("output_name", ["probabilities", "logits"])
def test_auto_output_kind_is_decided_by_the_first_reply(serve, connect, onnx_path, capsys,
                                                        output_name):
  model = connect(serve(declare_metadata=False), output_name=output_name, output_kind="auto")
  assert model.output_kind is None and model.declared_kind == "auto"
  images = _images(6)
  reply = model.score(images)
  np.testing.assert_allclose(reply.probabilities, _direct(onnx_path, images), rtol=1e-5,
                             atol=1e-6)
  assert model.output_kind == output_name
  assert reply.spent == Spent(calls=2, images=6)  # Decided without a request of its own.
  assert f"answers {output_name} in its first reply (4 images)" in capsys.readouterr().out


@pytest.mark.parametrize("output_name, kind, message", [
    ("probabilities", "logits", r"output_kind='logits', but the outputs of the model 'tiny' "
     r"at .* in its first reply \(4 images\) are rows in \[0, 1\] summing to 1 \(first row "
     r"\[.*\]\): declare probabilities or auto"),
    ("logits", "probabilities", r"output_kind='probabilities', but .* are not probabilities: "
     r"rows sum to \[.*\].*declare logits or auto"),
])
def test_a_declared_output_kind_that_the_first_reply_contradicts_is_refused(
    serve, connect, output_name, kind, message):
  model = connect(serve(), output_name=output_name, output_kind=kind)
  with pytest.raises(ValueError, match=message) as error:
    model.score(_images(4))
  assert spent_of(error.value) == Spent(failures=1) and model.output_kind is None


def test_a_wrong_input_size_names_the_input_spec(serve, onnx_path):
  spec = InputSpec(size=(8, 8), channels=3, channel_order="RGB", layout="NCHW",
                   pixel_max=1.0, mean=(0.0,), scale=1.0)
  with pytest.raises(ValueError, match=r"config\.black_box\.input declares NCHW"):
    HttpBlackBox(serve().url, "tiny", spec, input_name="images", output_name="probabilities",
                 output_kind="probabilities", num_classes=2)


def test_the_server_answers_errors_as_json(serve):
  server = serve()
  assert _get(f"{server.url}/v2/health/ready")[0] == 200
  status, _, body = _get(f"{server.url}/v2/models/nope")
  assert status == 404 and "'tiny'" in body["error"]
  request = urllib.request.Request(f"{server.url}/v2/models/tiny/infer", data=b"{not json",
                                   headers={"Content-Type": "application/json"})
  with pytest.raises(urllib.error.HTTPError) as error:
    urllib.request.urlopen(request, timeout=5)
  assert error.value.code == 400 and "not JSON" in json.loads(error.value.read())["error"]
  with pytest.raises(ValueError, match="Unknown fault"):
    server.faults.append("502")


@pytest.mark.parametrize("entry, message", [
    ({"name": "p", "shape": [1, 2], "datatype": "FP16", "data": [0.5, 0.5]}, "FP16"),
    ({"name": "p", "shape": [1, 2], "datatype": "FP32"}, "without 'data'"),
    ({"name": "p", "shape": [1, 2], "datatype": "FP32", "data": [0.5]}, "1 values"),
    ({"name": "p", "shape": [2, 1], "datatype": "FP32", "data": [0.5, 0.5]}, "expected"),
    ({"name": "p", "shape": [1, 2], "datatype": "FP32", "data": ["0.5", 0.5]}, "numbers"),
    ({"name": "p", "shape": [1, 2], "datatype": "FP32", "data": [1e39, 0.5]}, "infinite"),
])
def test_decode_tensor_refuses_malformed_tensors(entry, message):
  with pytest.raises(ValueError, match=message):
    decode_tensor(entry, shape=(1, 2), source="test")


def test_protocol_helpers():
  for token in ("NaN", "Infinity", "-Infinity"):
    with pytest.raises(ValueError, match="non-finite"):
      loads_strict(f'{{"data": [{token}]}}', source="test")
  assert decode_tensor({"name": "p", "shape": [1, 2], "datatype": "FP64", "data": [1, 0.5]},
                       shape=(None, 2), source="test").tolist() == [[1.0, 0.5]]
  assert [retry_after_s(v) for v in ("2", "0.25", None, "Wed, 21 Oct 2015 07:28:00 GMT",
                                     "inf", "nan")] == [2.0, 0.25, None, None, None, None]


def test_the_http_client_needs_neither_onnx_nor_onnxruntime():
  code = ("import sys, dfm.black_box.http_client; "
          "print(sorted({'onnx', 'onnxruntime'} & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=Path(__file__).resolve().parents[1])
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"


def test_serve_model_entrypoint_answers_health(onnx_path):
  root = Path(__file__).resolve().parents[1]
  env = {**os.environ, "DFM_SERVE_KEY": SECRET}
  command = [sys.executable, "-m", "experiments.serve_model", f"--onnx={onnx_path}", "--port=0",
             "--api_key_env=DFM_SERVE_KEY"]
  process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  try:
    lines = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert lines and lines[0], "experiments.serve_model printed no URL within 60 s"
    url = re.search(r"http://[\d.]+:\d+", lines[0]).group()
    assert "Serving tiny at" in lines[0] and SECRET not in lines[0]
    assert _get(f"{url}/v2/health/ready")[0] == 200
    assert _get(f"{url}/v2/models/tiny")[0] == 401
    assert _get(f"{url}/v2/models/tiny", {"Authorization": f"Bearer {SECRET}"})[0] == 200
  finally:
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()
    process.stderr.close()


# What a hostile client costs: each test speaks raw HTTP to a real server on 127.0.0.1.

def _open(server, head: str, body: bytes = b"") -> "socket.socket":
  """A connection that has sent ``head`` (request line and headers) and ``body``, no more."""
  connection = socket.create_connection(server.server_address[:2], timeout=10)
  connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
  return connection


def _upload_head(length: int, key: str | None = None, path: str = "/v2/models/tiny/infer") -> str:
  auth = f"Authorization: Bearer {key}\n" if key else ""
  return (f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n{auth}"
          f"Content-Length: {length}\n")


def _answer(connection: "socket.socket") -> bytes:
  """Everything the server sends until it closes the connection (or 10 s pass)."""
  chunks = []
  try:
    while chunk := connection.recv(65536):
      chunks.append(chunk)
  except (TimeoutError, ConnectionResetError):
    pass
  finally:
    connection.close()
  return b"".join(chunks)


def _status(answer: bytes) -> int:
  return int(answer.split(b" ", 2)[1]) if answer else 0


def _headers_and_error(answer: bytes) -> tuple[str, str]:
  head, _, body = answer.partition(b"\r\n\r\n")
  return head.decode("latin-1"), json.loads(body)["error"]


def test_the_key_is_checked_before_any_body_is_read(serve):
  server = serve(api_key=SECRET)
  start = time.monotonic()
  answer = _answer(_open(server, _upload_head(10_000)))  # The body is never sent.
  head, error = _headers_and_error(answer)
  assert _status(answer) == 401 and "Authorization: Bearer KEY" in error
  assert "Connection: close" in head and time.monotonic() - start < 5  # Not the 30 s timeout.


def test_stalled_unauthenticated_uploads_are_answered_at_once_and_hold_no_thread(
    serve, connect, monkeypatch):
  server = serve(api_key=SECRET)  # max_concurrent=8, read_timeout_s=30 by default.
  start = time.monotonic()
  stalled = [_open(server, _upload_head(server.max_body_bytes), b'{"inputs": [')
             for _ in range(20)]
  statuses = [_status(_answer(connection)) for connection in stalled]
  assert set(statuses) <= {401, 503} and 401 in statuses
  assert time.monotonic() - start < 10  # 401 at once, the rest discarded for <= 1 s each.
  monkeypatch.setenv(KEY_ENV, SECRET)
  assert connect(server, api_key_env=KEY_ENV).score(_images(2)).spent == Spent(calls=1, images=2)


def test_a_body_over_the_cap_is_refused_with_413_before_it_is_read(serve):
  server = serve(api_key=SECRET, max_batch=4)
  assert server.max_body_bytes == server_limits.body_cap([[3, 4, 4]], 4) == 4 * 48 * 32 + 65536
  answer = _answer(_open(server, _upload_head(server.max_body_bytes + 1, SECRET)))
  _, error = _headers_and_error(answer)
  assert _status(answer) == 413
  assert error == (f"The body is over this server's limit of {server.max_body_bytes} bytes "
                   "(max_batch=4 images of the model's input); send fewer images per request.")
  unauthenticated = _answer(_open(server, _upload_head(10**9)))
  assert _status(unauthenticated) == 401  # The key first, then the size.


def test_a_batch_over_max_batch_is_refused_before_decoding(serve, connect, monkeypatch):
  decoded = []

  def recorded(entry, **kwargs):
    decoded.append(entry)
    return decode_tensor(entry, **kwargs)

  monkeypatch.setattr(served_model, "decode_tensor", recorded)
  server = serve(max_batch=4)
  body = json.dumps({"inputs": [{"name": "images", "shape": [5, 3, 4, 4], "datatype": "FP32",
                                 "data": [0] * 240}]}).encode()  # Short numbers: under the cap.
  assert len(body) < server.max_body_bytes
  answer = _answer(_open(server, _upload_head(len(body)) + "Connection: close\n", body))
  assert _status(answer) == 413 and decoded == []
  assert _headers_and_error(answer)[1] == ("The request holds more than this server's "
                                           "max_batch=4 images; send at most 4 per request.")
  with pytest.raises(ValueError, match=r"HTTP 413 .*max_batch=4.*lower config\.black_box\."
                     r"batch_size"):
    connect(server, batch_size=5).score(_images(5))
  assert decoded == []
  assert connect(server, batch_size=4).score(_images(5)).spent == Spent(calls=2, images=5)
  assert len(decoded) == 2  # Batches within max_batch are decoded.


def test_the_client_reads_a_413_sent_before_its_body_was_read(serve, connect, sleeps):
  server = serve(max_batch=1)
  model = connect(server, batch_size=10_000, check_metadata=False)  # ~10 MB: the send breaks.
  with pytest.raises(ValueError, match=r"HTTP 413 .*max_batch=1 images.*lower "
                     r"config\.black_box\.batch_size") as error:
    model.score(_images(10_000))
  assert spent_of(error.value) == Spent(failures=1) and sleeps == []


def test_a_stalled_upload_is_answered_408_and_closed_after_the_read_timeout(serve):
  server = serve(read_timeout_s=0.5)
  start = time.monotonic()
  answer = _answer(_open(server, _upload_head(1000), b'{"inputs": ['))
  assert _status(answer) == 408 and 0.4 < time.monotonic() - start < 5
  assert "Connection: close" in _headers_and_error(answer)[0]
  start = time.monotonic()
  silent = socket.create_connection(server.server_address[:2], timeout=10)
  assert _answer(silent) == b"" and time.monotonic() - start < 5  # Closed, no request sent.


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_read_timeout(serve):
  server = serve(read_timeout_s=0.5)
  connection = _open(server, "GET /v2/health/ready HTTP/1.1")  # Then a header line each 0.1 s,
  connection.setblocking(False)  # each well within the 0.5 s a read may take.
  start, cut = time.monotonic(), False
  while time.monotonic() - start < 5 and not cut:
    try:
      connection.sendall(b"X-Drip: 1\r\n")
      cut = connection.recv(1) == b""
    except BlockingIOError:
      pass
    except OSError:
      cut = True
    time.sleep(0.1)
  connection.close()
  assert cut and time.monotonic() - start < 2


def test_connections_past_max_concurrent_get_503_with_retry_after(serve):
  server = serve(max_concurrent=2, read_timeout_s=20)
  holding = [_open(server, _upload_head(1000), b"{") for _ in range(2)]
  time.sleep(0.2)  # Both are now reading their bodies.
  start = time.monotonic()
  answer = _answer(socket.create_connection(server.server_address[:2], timeout=10))
  head, error = _headers_and_error(answer)
  assert _status(answer) == 503 and "\r\nRetry-After: 1\r\n" in head and "busy" in error
  assert time.monotonic() - start < 2
  for connection in holding:
    connection.close()
  deadline = time.monotonic() + 5
  while _status(_answer(_open(server, "GET /v2/health/ready HTTP/1.1\nHost: x\n"
                                      "Connection: close\n"))) != 200:
    assert time.monotonic() < deadline, "the slots were not given back"
    time.sleep(0.05)


def test_the_rate_limit_lets_burst_requests_through_at_once(serve, monkeypatch):
  monkeypatch.setattr(server_limits, "time", _Clock())
  server = serve(max_requests_per_s=2, burst=3)
  url = f"{server.url}/v2/models/tiny"
  assert [_get(url)[0] for _ in range(3)] == [200, 200, 200]
  status, headers, _ = _get(url)
  assert status == 429 and headers["Retry-After"] == "1"
  assert [server_limits.retry_after(s) for s in (0.017, 1.0, 2.5)] == ["1", "1", "3"]
  with pytest.raises(ValueError, match="burst must be at least 1"):
    serve(max_requests_per_s=2, burst=0)


MARKER = "echo7b1e"


@pytest.mark.parametrize("request_text", [
    f"GET /v2/models/{MARKER} HTTP/1.1\nHost: x\nConnection: close\n",
    f"GET /{MARKER} HTTP/1.1\nHost: x\nConnection: close\n",
    f"POST /v2/models/tiny/{MARKER} HTTP/1.1\nHost: x\nContent-Length: 2\n",
    f"GET /x HTTP/1.1{MARKER}\nHost: x\n",
    f"{MARKER.upper()} /x HTTP/1.1\nHost: x\n",
])
def test_error_replies_echo_no_path(serve, request_text):
  answer = _answer(_open(serve(), request_text))
  assert _status(answer) >= 400 and b"error" in answer
  assert MARKER.encode() not in answer.lower()


@pytest.mark.parametrize("body", [
    f"{{{MARKER}",
    json.dumps({"inputs": [{"name": MARKER}]}),
    json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 4, 4], "datatype": MARKER,
                            "data": [0] * 48}]}),
    json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32",
                            "data": [MARKER] * 48}]}),
    json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 4, 4], "datatype": "FP32",
                            "data": [0] * 48}], "outputs": [{"name": MARKER}]}),
])
def test_error_replies_echo_no_body(serve, body):
  answer = _answer(_open(serve(), _upload_head(len(body)) + "Connection: close\n",
                         body.encode()))
  assert _status(answer) == 400 and MARKER.encode() not in answer
  assert _headers_and_error(answer)[1]


@pytest.mark.parametrize("url", ["http://10.0.0.5:8500", "http://models.example.com",
                                 "http://127.0.0.1.example.com:8500"])
def test_the_key_is_refused_over_plain_http_to_another_host(url, monkeypatch):
  monkeypatch.setenv(KEY_ENV, SECRET)
  options = dict(input_name="images", output_name="probabilities",
                 output_kind="probabilities", num_classes=2, api_key_env=KEY_ENV)
  with pytest.raises(ValueError) as error:
    HttpBlackBox(url, "tiny", SPEC, **options)  # Refused before any request is sent.
  assert str(error.value) == (
      f"config.black_box.url={url!r} is plain http:// to {urllib.parse.urlsplit(url).hostname}, "
      "which is not this machine, so the API key (config.black_box.api_key_env) would travel "
      "unencrypted: use an https:// URL, or set config.black_box.allow_plain_http_key=True if "
      "the network is trusted.")
  assert SECRET not in str(error.value)
  for allowed, extra in [(url, {"allow_plain_http_key": True}),
                         (url.replace("http://", "https://"), {})]:
    assert HttpBlackBox(allowed, "tiny", SPEC, check_metadata=False, **extra, **options)
  monkeypatch.delenv(KEY_ENV)
  assert HttpBlackBox(url, "tiny", SPEC, check_metadata=False, **{**options, "api_key_env": ""})


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.3.2.1", "::1"])
def test_the_key_may_go_over_plain_http_to_this_machine(serve, host, monkeypatch):
  monkeypatch.setenv(KEY_ENV, SECRET)
  assert is_loopback(host)
  url = f"http://{f'[{host}]' if ':' in host else host}:8500"
  assert HttpBlackBox(url, "tiny", SPEC, input_name="images", output_name="probabilities",
                      output_kind="probabilities", num_classes=2, api_key_env=KEY_ENV,
                      check_metadata=False)
  assert not is_loopback("10.0.0.5") and not is_loopback("localhost.example.com")


def test_allow_plain_http_key_is_read_from_the_config_and_older_configs_load(monkeypatch):
  monkeypatch.setenv(KEY_ENV, SECRET)
  config = query_configs.get_config("gender_v1,via=http")
  assert config.black_box.allow_plain_http_key is False
  with config.unlocked():
    config.black_box.update(url="http://10.0.0.5:8500", api_key_env=KEY_ENV,
                            check_metadata=False)
  with pytest.raises(ValueError, match="would travel unencrypted"):
    from_config(config)
  config.black_box.allow_plain_http_key = True
  assert isinstance(from_config(config), HttpBlackBox)
  with config.unlocked():
    del config.black_box["allow_plain_http_key"]  # A config written before the field.
  with pytest.raises(ValueError, match="would travel unencrypted"):
    from_config(config)


def _entrypoint(args: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        check=False, timeout=300, cwd=Path(__file__).resolve().parents[1])


def test_serve_model_refuses_a_file_that_is_not_onnx_in_one_line(tmp_path):
  path = tmp_path / "model.onnx"
  path.write_text("not a model")
  result = _entrypoint(["experiments.serve_model", f"--onnx={path}", "--port=0"])
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {path} is not an ONNX model (InvalidProtobuf: ")


def test_query_dft_with_no_server_ends_with_one_line_error(tmp_path):
  with socket.socket() as probe:  # A port where nothing listens.
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  assert issubclass(BlackBoxUnavailable, ValueError)
  result = _entrypoint(["experiments.query_dft", "--config=configs/query.py:gender_v1,via=http",
                        f"--config.black_box.url=http://127.0.0.1:{port}",
                        "--config.black_box.max_retries=0", f"--workdir={tmp_path / 'run'}"])
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: GET http://127.0.0.1:{port}/v2/models/gender-v1 failed 1 times (last: "
      "ConnectionRefusedError: [Errno 111] Connection refused); the service is unavailable. "
      "Nothing listens there: start the server (e.g. python -m experiments.serve_model) or fix "
      "config.black_box.url.")
