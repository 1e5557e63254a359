"""A Flax module of your own (Linen or NNX), named by import path, with saved params.

``config.model.module`` names the class: ``"package.module:Class"`` (importable from
the folder you run in, or installed) or ``"path/to/file.py:Class"``;
``config.model.kwargs`` are its constructor's arguments and
``config.model.call_kwargs`` those of its call (e.g. ``{"train": false}``): a
mapping, or JSON text, as an absl flag gives it
(``--config.model.kwargs='{"num_classes": 10}'``).
``config.model.params`` is the saved parameters:

- a ``flax.serialization`` msgpack file (``.msgpack``), e.g.
  ``Path("p.msgpack").write_bytes(flax.serialization.to_bytes(variables))``;
- an orbax checkpoint folder, e.g. ``ocp.StandardCheckpointer().save(path, variables)``,
  or a ``CheckpointManager`` folder (its latest step).

For Linen the file holds the variables ``{"params": ..., "batch_stats": ...}`` (or
only the params); for NNX the pure dict of the module's state without its RNG
keys (``nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))``).

Every saved array is checked against the module built from ``kwargs``: a missing
or extra parameter, or another shape, is named with both.

Example::

  fn, params = load_flax_function(model_config, example=jnp.zeros((1, 32, 32, 3)))
  logits = fn(params, tensor)
"""
import importlib
import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax
import jax
import orbax.checkpoint as ocp
from flax import linen, nnx, serialization, traverse_util

from dfm.models.frozen import shape_mismatches
from dfm.types import ModelFn



def import_class(reference: str) -> type:
  """The class ``"package.module:Class"`` or ``"path/to/file.py:Class"`` names.

  Raises:
    ValueError: a malformed reference, a module that cannot be imported, no such class.
  """
  module_name, _, class_name = reference.partition(":")
  if not module_name or not class_name:
    raise ValueError(f"config.model.module={reference!r} must be 'package.module:Class' or "
                     "'path/to/file.py:Class'.")
  if module_name.endswith(".py"):
    module = _import_file(Path(module_name))
  else:
    try:
      module = importlib.import_module(module_name)
    except ImportError as error:
      raise ValueError(f"config.model.module={reference!r}: cannot import {module_name!r} "
                       f"({error}). Run from the folder that holds it, install it, or give "
                       "'path/to/file.py:Class'.") from None
  if not hasattr(module, class_name):
    raise ValueError(f"config.model.module={reference!r}: {module_name} has no "
                     f"{class_name!r}.")
  return getattr(module, class_name)


def _import_file(path: Path) -> Any:
  if not path.is_file():
    raise FileNotFoundError(f"No Python file at {path.absolute()}: fix config.model.module.")
  name = f"dfm_user_model_{path.stem}"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except (SyntaxError, ImportError) as error:
    raise ValueError(f"config.model.module: {path} cannot be imported ({error}).") from None
  return module


def _keyword_arguments(value: Mapping | str, field: str) -> dict[str, Any]:
  """A mapping as it is, or JSON text of an object (``'{"features": 8}'``)."""
  if not isinstance(value, str):
    return dict(value)
  try:
    parsed = json.loads(value or "{}")
  except json.JSONDecodeError as error:
    raise ValueError(f"{field}={value!r} is not JSON ({error.msg}); write e.g. "
                     "'{\"num_classes\": 10}'.") from None
  if not isinstance(parsed, dict):
    raise ValueError(f"{field}={value!r} must be a JSON object of keyword arguments.")
  return parsed


def read_saved_tree(path: Path) -> dict[str, Any]:
  """The nested dict of arrays in a msgpack file or an orbax checkpoint folder.

  Raises:
    FileNotFoundError: nothing at ``path``.
    ValueError: a file that is neither.
  """
  path = Path(path).absolute()
  if path.is_dir():
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(_orbax_item(path))
  if not path.is_file():
    raise FileNotFoundError(f"No saved params at {path}: set config.model.params to a "
                            ".msgpack file or an orbax checkpoint folder.")
  if path.suffix != ".msgpack":
    raise ValueError(f"config.model.params={str(path)!r}: give a flax.serialization "
                     ".msgpack file or an orbax checkpoint folder.")
  return serialization.msgpack_restore(path.read_bytes())


def _orbax_item(path: Path) -> Path:
  """``path`` itself, or the one item of a CheckpointManager folder's latest step."""
  if (path / "_CHECKPOINT_METADATA").is_file():
    return path
  steps = sorted((int(child.name), child) for child in path.iterdir() if child.name.isdigit())
  if not steps:
    raise ValueError(f"{path} is not an orbax checkpoint (no _CHECKPOINT_METADATA, no steps).")
  items = [child for child in steps[-1][1].iterdir() if child.is_dir()]
  if len(items) != 1:
    raise ValueError(f"{steps[-1][1]} holds {len(items)} items ({[i.name for i in items]}); "
                     "point config.model.params at the one with the model's variables.")
  return items[0]


def _checked(saved: Mapping, expected: Any, what: str) -> None:
  problems = shape_mismatches(saved, expected)
  if problems:
    raise ValueError(f"The saved params do not fit {what}: " + "; ".join(problems[:5])
                     + ". Check config.model.kwargs (and that the file is this model's).")


def _linen_function(module: linen.Module, saved: dict, example: jax.Array,
                    call_kwargs: Mapping, what: str) -> tuple[ModelFn, Any]:
  try:
    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), example, **call_kwargs))
    jax.eval_shape(lambda variables: module.apply(variables, example, **call_kwargs), expected)
  except flax.errors.FlaxError as error:
    raise ValueError(f"{what} cannot run as a frozen classifier with config.model.call_kwargs="
                     f"{dict(call_kwargs)} ({str(error).splitlines()[0]}); a module with "
                     "batch norm or dropout needs e.g. --config.model.call_kwargs="
                     "'{\"train\": false}'.") from None
  variables = dict(saved) if "params" in saved else {"params": saved}
  _checked(variables, expected, what)

  def fn(params: Any, tensor: jax.Array) -> jax.Array:
    return module.apply({"params": params["trainable"], **params["fixed"]}, tensor,
                        **call_kwargs)

  return fn, {"trainable": variables.pop("params"), "fixed": variables}


def _nnx_function(model: nnx.Module, saved: dict, call_kwargs: Mapping, what: str
                  ) -> tuple[ModelFn, Any]:
  graphdef, rngs, weights, rest = nnx.split(model, nnx.RngState, nnx.Param, ...)
  paths = {name: set(traverse_util.flatten_dict(nnx.to_pure_dict(state)))
           for name, state in (("rngs", rngs), ("weights", weights), ("rest", rest))}
  saved = {path: value for path, value in
           traverse_util.flatten_dict(nnx.restore_int_paths(saved)).items()
           if path not in paths["rngs"]}
  expected = {**traverse_util.flatten_dict(nnx.to_pure_dict(weights)),
              **traverse_util.flatten_dict(nnx.to_pure_dict(rest))}
  _checked(traverse_util.unflatten_dict(saved), traverse_util.unflatten_dict(expected), what)
  for name, state in (("weights", weights), ("rest", rest)):
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(
        {path: value for path, value in saved.items() if path in paths[name]}))

  def fn(params: Any, tensor: jax.Array) -> jax.Array:
    module = nnx.merge(graphdef, rngs, params["trainable"], params["fixed"])
    module.eval()
    return module(tensor, **call_kwargs)

  return fn, {"trainable": weights, "fixed": rest}


def load_flax_function(model: Mapping[str, Any], *, example: jax.Array
                       ) -> tuple[ModelFn, Any]:
  """``(fn(params, tensor) -> outputs, params)`` of ``model.module`` with ``model.params``.

  ``example`` is one input tensor (the model's own convention), for the shape check.
  """
  cls = import_class(model["module"])
  kwargs = _keyword_arguments(model.get("kwargs", {}), "config.model.kwargs")
  call_kwargs = _keyword_arguments(model.get("call_kwargs", {}), "config.model.call_kwargs")
  saved = read_saved_tree(Path(model["params"]))
  what = f"{cls.__name__}(**{kwargs})"
  if isinstance(cls, type) and issubclass(cls, nnx.Module):
    return _nnx_function(cls(**kwargs, rngs=nnx.Rngs(0)), saved, call_kwargs, what)
  if isinstance(cls, type) and issubclass(cls, linen.Module):
    return _linen_function(cls(**kwargs), saved, example, call_kwargs, what)
  raise ValueError(f"config.model.module={model['module']!r} is not a Flax Linen or NNX "
                   "Module class.")
