"""Building dfm's own VGG and turning it into the pure ``apply_fn(params, images) -> logits``."""
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from dfm.models.vgg import VGG
from dfm.types import ApplyFn
from dfm.xla import compiler_options


def build_classifier(model_config: Mapping[str, Any]) -> VGG:
  """Builds the VGG described by ``config.model`` (``blocks``, ``dense``, ``num_classes``)."""
  return VGG(
      blocks=tuple(tuple(block) for block in model_config["blocks"]),
      dense=tuple(model_config["dense"]),
      num_classes=model_config["num_classes"],
  )


def make_apply_fn(module: VGG) -> ApplyFn:
  """Returns the pure ``apply_fn(params, images) -> logits`` of a Flax module.

  Example::

    apply_fn = make_apply_fn(build_classifier(config.model))
    logits = apply_fn(params, images)   # images [B, H, W, C] in [0, 1]
  """

  def apply_fn(params: Any, images: jax.Array) -> jax.Array:
    return module.apply({"params": params}, images)

  return apply_fn


def init_params(module: VGG, input_shape: tuple[int, ...], seed: int) -> Any:
  """Initial parameters for images of ``input_shape`` = ``(H, W, C)``.

  Compiled as one program (the same values as running ``module.init`` op by op,
  at half the time: eager init compiles each initializer separately), for running
  once (:func:`dfm.xla.compiler_options`).
  """
  dummy = jnp.zeros((1, *input_shape), jnp.float32)
  init = jax.jit(module.init, compiler_options=compiler_options(run_once=True))
  return init(jax.random.key(seed), dummy)["params"]


def param_shapes(module: VGG, input_shape: tuple[int, ...]) -> Any:
  """The parameter tree of ``module`` as ``jax.ShapeDtypeStruct`` (no compute)."""
  dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return jax.eval_shape(module.init, jax.random.key(0), dummy)["params"]


def count_params(params: Any) -> int:
  """Total number of scalars in a parameter tree."""
  return sum(leaf.size for leaf in jax.tree.leaves(params))
