"""A saved Keras 3 model (``.keras``) as a pure JAX function, through ``stateless_call``.

Keras runs on its JAX backend (``KERAS_BACKEND=jax``, set here unless something
imported Keras before); the model's variables become the params, so ``jax.grad``
and ``jax.jit`` see one JAX function and the weights are placed once::

  outputs, _ = model.stateless_call(trainable, non_trainable, tensor, training=False)

Install the optional extra first: ``pip install -e '.[keras]'``.

Example::

  fn, params = load_keras_function(Path("model.keras"))
  probabilities = fn(params, tensor)   # the model's own input convention
"""
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from dfm.types import ModelFn


def _import_keras() -> Any:
  os.environ.setdefault("KERAS_BACKEND", "jax")
  try:
    import keras  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("config.model.kind='keras' needs Keras 3: pip install -e '.[keras]' "
                     "(or .venv/bin/pip install keras).") from None
  if keras.backend.backend() != "jax":
    raise ValueError(f"Keras runs on its {keras.backend.backend()!r} backend in this process; "
                     "set KERAS_BACKEND=jax before anything imports keras.")
  return keras


def load_keras_function(path: Path) -> tuple[ModelFn, Any]:
  """``(fn(params, tensor) -> outputs, params)`` of the ``.keras`` file at ``path``.

  ``params`` is ``{"trainable", "fixed"}``: copies of the model's trainable and
  non-trainable variables.
  """
  keras = _import_keras()
  try:
    model = keras.saving.load_model(path, compile=False)
  except ValueError as error:
    raise ValueError(f"Keras cannot load {path}: {error}") from None
  params = {"trainable": [jnp.array(v.value) for v in model.trainable_variables],
            "fixed": [jnp.array(v.value) for v in model.non_trainable_variables]}

  def fn(params: Any, tensor: jax.Array) -> jax.Array:
    outputs, _ = model.stateless_call(params["trainable"], params["fixed"], tensor,
                                      training=False)
    return outputs

  return fn, params
