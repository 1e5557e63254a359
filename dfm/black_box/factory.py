"""The black box that ``config.black_box`` names, built and checked before any query.

``config.black_box.kind`` is one of :data:`BLACK_BOX_KINDS`:

- ``jax``: the classifier checkpoint of ``config.classifier_dir``, seen only
  through its scores (:class:`dfm.black_box.base.JaxBlackBox`);
- ``onnx``: the file ``config.black_box.path`` run by onnxruntime
  (:class:`dfm.black_box.onnx_file.OnnxBlackBox`);
- ``http``: a KServe V2 server at ``config.black_box.url``
  (:class:`dfm.black_box.http_client.HttpBlackBox`).

With ``config.black_box.top_k`` the model reveals only its ``top_k`` best classes.
``config.black_box.output_kind`` is ``probabilities``, ``logits`` or ``auto`` (decided
from the numbers); ``config.black_box.check_metadata`` (http; True if absent, as in
configs written before it) checks the server's model metadata on load.

Example::

  model = from_config(configs.query.get_config("gender_v1"))
  model.score(images).probabilities   # [N, 2]
"""
from collections.abc import Callable

import ml_collections

from dfm import models
from dfm.black_box.base import BlackBox, JaxBlackBox, TopKBlackBox
from dfm.black_box.http_client import HttpBlackBox
from dfm.models.input_spec import InputSpec
from dfm.black_box.onnx_file import OnnxBlackBox
from dfm.models.model_files import resolve_model_path

BLACK_BOX_KINDS = ("jax", "onnx", "http")


def _jax(config: ml_collections.ConfigDict) -> BlackBox:
  apply_fn, params = models.load_frozen_classifier(config)
  return JaxBlackBox(apply_fn, params, num_classes=config.model.num_classes)


def _onnx(config: ml_collections.ConfigDict) -> BlackBox:
  box = config.black_box
  return OnnxBlackBox(resolve_model_path(box.path), InputSpec.from_config(box.input),
                      input_name=box.input_name, output_name=box.output_name,
                      output_kind=box.output_kind, num_classes=config.model.num_classes,
                      classes_name=box.classes_name)


def _http(config: ml_collections.ConfigDict) -> BlackBox:
  box = config.black_box
  return HttpBlackBox(
      box.url, box.model_name, InputSpec.from_config(box.input), input_name=box.input_name,
      output_name=box.output_name, output_kind=box.output_kind,
      num_classes=config.model.num_classes, classes_name=box.classes_name,
      batch_size=box.batch_size, api_key_env=box.api_key_env, timeout_s=box.timeout_s,
      max_retries=box.max_retries, backoff_s=box.backoff_s, max_backoff_s=box.max_backoff_s,
      check_metadata=box.get("check_metadata", True),
      allow_plain_http_key=box.get("allow_plain_http_key", False))


_OPENERS: dict[str, Callable[[ml_collections.ConfigDict], BlackBox]] = {
    "jax": _jax, "onnx": _onnx, "http": _http}


def from_config(config: ml_collections.ConfigDict) -> BlackBox:
  """The model of ``config.black_box`` (top-k when ``config.black_box.top_k``).

  Example::

    model = from_config(config)   # config.black_box.kind: jax, onnx or http
    model(images)                 # [N, config.model.num_classes]

  Raises:
    ValueError: an unknown ``config.black_box.kind``, or a model that does not fit
      the config.
    FileNotFoundError: no ONNX file at ``config.black_box.path``.
  """
  box = config.black_box
  if box.kind not in BLACK_BOX_KINDS:
    raise ValueError(f"config.black_box.kind={box.kind!r} is not one of {BLACK_BOX_KINDS}.")
  model = _OPENERS[box.kind](config)
  return TopKBlackBox(model, box.top_k) if box.top_k else model
