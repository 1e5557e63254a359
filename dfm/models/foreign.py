"""Frozen classifiers trained elsewhere, turned once into ``apply_fn(params, images) -> logits``.

``config.model.kind`` picks where the classifier comes from (:data:`FROZEN_KINDS`):

- ``vgg``: dfm's own VGG, trained by ``experiments.train_classifier`` (the default;
  a config without ``kind`` means it);
- ``onnx``: an ONNX graph (e.g. a PyTorch model exported with ``torch.onnx.export``)
  converted to a JAX function and differentiated through, not run by onnxruntime
  (:mod:`dfm.models.onnx_graph`); ``config.model.path`` is the file (or
  ``package:NAME/file``);
- ``flax``: a Flax Linen or NNX module named by import path, ``config.model.module``,
  with params saved as msgpack or by orbax, ``config.model.params``
  (:mod:`dfm.models.flax_module`);
- ``keras``: a ``.keras`` file run by Keras 3 on JAX, ``config.model.path``
  (:mod:`dfm.models.keras_file`; the optional extra ``keras``).

For the foreign kinds ``config.model.input`` declares the tensor the model takes
(:class:`dfm.models.input_spec.InputSpec`; its ``size=()`` and ``channels=0``, or a
section left out, mean the images' own, ``[B, H, W, C]`` in [0, 1]) and
``config.model.output_kind`` whether it answers ``logits`` (the default) or
``probabilities`` (then ``log p`` serves as logits: ``softmax(log p) = p``).

Either way the images are ``[B, H, W, C]`` in [0, 1] and the params are placed on
the device once, so DFT, MFT, DFT+MFT and the query-only path take it unchanged. A
foreign model's params are ``{"trainable": ..., "fixed": ...}``: MFT moves only the
trainable weights (of an ONNX graph: :data:`dfm.models.onnx_graph.WEIGHT_INPUTS`),
never running statistics (batch norm), constants or other state.
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
from dfm.models.model_files import read_onnx, resolve_model_path
from dfm.types import ApplyFn, ModelFn

FROZEN_KINDS = ("vgg", "onnx", "flax", "keras")
# log(0) is -inf: a probability output is floored here before its log.
_MIN_PROB = 1e-30


def _as_logits(outputs: jax.Array, output_kind: str) -> jax.Array:
  """Logits from a model's output: as they are, or ``log p`` for probabilities."""
  if output_kind == "probabilities":
    return jnp.log(jnp.maximum(outputs, _MIN_PROB))
  return outputs


def model_input_spec(model: ml_collections.ConfigDict) -> InputSpec:
  """``config.model.input``; ``size=()`` and ``channels=0`` (or no section at all) mean
  the images' own, from ``config.model.input_shape`` (NHWC in [0, 1] without a section)."""
  height, width, channels = model.input_shape
  section = {"channel_order": "RGB", "layout": "NHWC", "pixel_max": 1.0, "mean": (0.0,),
             "scale": 1.0, **dict(model.get("input") or {})}
  section["size"] = tuple(section.get("size") or (height, width))
  section["channels"] = section.get("channels") or channels
  return InputSpec.from_config(section, config_field="config.model.input")


# Each loader is imported on first use: dfm's own VGG starts without onnx or keras.
# Each returns ``(fn(params, tensor), params)``, params split as {"trainable", "fixed"}.
def _onnx_function(model: ml_collections.ConfigDict, _: InputSpec) -> tuple[ModelFn, Any]:
  from dfm.models import onnx_graph  # pylint: disable=import-outside-toplevel
  proto = read_onnx(resolve_model_path(model.path))  # Read once, for both.
  graph_fn, params = onnx_graph.load_onnx_function(
      proto, input_name=model.get("input_name") or None,
      output_name=model.get("output_name") or None)
  weights = onnx_graph.weight_names(proto.graph)

  def fn(params: Any, tensor: jax.Array) -> jax.Array:
    return graph_fn({**params["trainable"], **params["fixed"]}, tensor)

  return fn, {"trainable": {k: v for k, v in params.items() if k in weights},
              "fixed": {k: v for k, v in params.items() if k not in weights}}


def _flax_function(model: ml_collections.ConfigDict, spec: InputSpec) -> tuple[ModelFn, Any]:
  from dfm.models.flax_module import load_flax_function  # pylint: disable=import-outside-toplevel
  return load_flax_function(model, example=jnp.zeros((1, *spec.shape), jnp.float32))


def _keras_function(model: ml_collections.ConfigDict, _: InputSpec) -> tuple[ModelFn, Any]:
  from dfm.models.keras_file import load_keras_function  # pylint: disable=import-outside-toplevel
  return load_keras_function(resolve_model_path(model.path))


_FOREIGN_LOADERS = {"onnx": _onnx_function, "flax": _flax_function, "keras": _keras_function}


def load_foreign_classifier(model: ml_collections.ConfigDict) -> tuple[ApplyFn, Any]:
  """``(apply_fn, params)`` of a model of kind onnx, flax or keras, under ``model.input``."""
  output_kind = model.get("output_kind", "logits")
  if output_kind not in OUTPUT_KINDS:
    raise ValueError(f"config.model.output_kind={output_kind!r} is not one of "
                     f"{OUTPUT_KINDS}.")
  spec = model_input_spec(model)
  model_fn, params = _FOREIGN_LOADERS[model.kind](model, spec)

  def apply_fn(params: Any, images: jax.Array) -> jax.Array:
    return _as_logits(model_fn(params, spec.apply(images)), output_kind)

  return apply_fn, jax.device_put(params)


def describe_model(config: ml_collections.ConfigDict) -> str:
  """``"The onnx model m.onnx"``: the frozen classifier as messages name it."""
  kind = config.model.get("kind", "vgg")
  where = {"vgg": config.get("classifier_dir"), "flax": config.model.get("module")}.get(
      kind, config.model.get("path"))
  return f"The {kind} model {where}"


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
  apply_fn, params = load_foreign_classifier(config.model)
  check_against_config(apply_fn, params, config.model, describe_model(config))
  return apply_fn, params
