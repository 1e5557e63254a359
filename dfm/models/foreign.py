"""Frozen classifiers trained elsewhere, turned once into ``apply_fn(params, images) -> logits``.

``config.model.kind`` picks where the classifier comes from (:data:`FROZEN_KINDS`):

- ``vgg``: dfm's own VGG, trained by ``experiments.train_classifier`` (the default;
  a config without ``kind`` means it);
- ``onnx``: an ONNX graph (e.g. a PyTorch model exported with ``torch.onnx.export``)
  converted to a JAX function and differentiated through, not run by onnxruntime
  (:mod:`dfm.models.onnx_graph`). ``config.model.path`` is the file (or
  ``package:NAME/file``), ``config.model.input`` its input convention
  (:class:`dfm.models.input_spec.InputSpec`), ``config.model.output_kind`` whether
  its output is ``logits`` or ``probabilities`` (then ``log p`` serves as logits:
  ``softmax(log p) = p``).

Either way the images are ``[B, H, W, C]`` in [0, 1] and the params are placed on
the device once, so DFT, MFT, DFT+MFT and the query-only path take it unchanged.
Loading checks the model against ``config.model`` (classes, image shape), naming both.

Example::

  apply_fn, params = load_frozen_classifier(config)   # any kind
  logits = apply_fn(params, images)
"""
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from dfm.models.frozen import load_frozen_vgg
from dfm.models.input_spec import OUTPUT_KINDS, InputSpec
from dfm.models.model_files import resolve_model_path
from dfm.types import ApplyFn

FROZEN_KINDS = ("vgg", "onnx")
# log(0) is -inf: a probability output is floored here before its log.
_MIN_PROB = 1e-30


def _as_logits(outputs: jax.Array, output_kind: str) -> jax.Array:
  """Logits from a model's output: as they are, or ``log p`` for probabilities."""
  if output_kind == "probabilities":
    return jnp.log(jnp.maximum(outputs, _MIN_PROB))
  return outputs


def load_onnx_classifier(model: ml_collections.ConfigDict) -> tuple[ApplyFn, Any]:
  """``(apply_fn, params)`` of the ONNX graph ``model.path`` under ``model.input``.

  The converter (and the ``onnx`` package) is imported here, on first use: every
  other kind, and every run of dfm's own VGG, starts without it.
  """
  from dfm.models.onnx_graph import load_onnx_function  # pylint: disable=import-outside-toplevel
  if model.output_kind not in OUTPUT_KINDS:
    raise ValueError(f"config.model.output_kind={model.output_kind!r} is not one of "
                     f"{OUTPUT_KINDS}.")
  spec = InputSpec.from_config(model.input, config_field="config.model.input")
  graph_fn, params = load_onnx_function(resolve_model_path(model.path),
                                        input_name=model.input_name or None,
                                        output_name=model.output_name or None)

  def apply_fn(params: Any, images: jax.Array) -> jax.Array:
    return _as_logits(graph_fn(params, spec.apply(images)), model.output_kind)

  return apply_fn, jax.device_put(params)


def check_against_config(apply_fn: ApplyFn, params: Any, model: ml_collections.ConfigDict,
                         source: str) -> None:
  """The model maps ``[B, *config.model.input_shape]`` images to ``num_classes`` logits.

  Raises:
    ValueError: naming what the model gives and what the config declares.
  """
  images = jax.ShapeDtypeStruct((2, *model.input_shape), jnp.float32)
  try:
    logits = jax.eval_shape(apply_fn, params, images)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{source} cannot take images of config.model.input_shape="
                     f"{tuple(model.input_shape)}: {error}") from None
  if logits.shape != (2, model.num_classes):
    raise ValueError(f"{source} gives outputs of shape {logits.shape[1:]} per image but "
                     f"config.model.num_classes={model.num_classes}: set it to the model's "
                     "number of classes (or name the right output in config.model.output_name).")


def load_frozen_classifier(config: ml_collections.ConfigDict) -> tuple[ApplyFn, Any]:
  """``(apply_fn, params)`` of the frozen classifier ``config.model`` names, on the device.

  Raises:
    ValueError: an unknown ``config.model.kind``, or a model that does not fit the config.
  """
  kind = config.model.get("kind", "vgg")
  if kind not in FROZEN_KINDS:
    raise ValueError(f"config.model.kind={kind!r} is not one of {FROZEN_KINDS}.")
  if kind == "vgg":
    return load_frozen_vgg(config)
  apply_fn, params = load_onnx_classifier(config.model)
  check_against_config(apply_fn, params, config.model, f"The ONNX model {config.model.path}")
  return apply_fn, params
