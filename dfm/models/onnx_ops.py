"""The ONNX operators :mod:`dfm.models.onnx_graph` converts: one JAX function per op type.

A handler is ``fn(node, *inputs) -> jax.Array``: ``node`` carries the node's
attributes (``node.attrs``, plain Python values) and the model's opset, and an
absent optional input is ``None``. The inputs at the positions ``Op.static`` names
(shapes, axes, pads, scales) are NumPy arrays taken from the graph's constants, so
every shape is known when JAX traces. ``Op.allowed`` lists, per attribute, the
values a handler implements (``()``: the attribute must be absent); the loader
refuses any other value before anything runs. Every handler is made of
differentiable ``jax.numpy``/``lax`` operations, layouts as ONNX has them
(``[N, C, *spatial]``, kernels ``[C_out, C_in / group, *kernel]``).
"""
import functools
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import erf


class Node(NamedTuple):
  """What a handler knows of its ONNX node."""
  op_type: str
  name: str
  attrs: dict[str, Any]
  opset: int  # the version of the default ONNX domain the model imports


class Op(NamedTuple):
  """A handler, the input positions that must be constants, the attribute values it covers."""
  fn: Callable[..., jax.Array]
  static: tuple[int, ...] = ()
  allowed: Mapping[str, tuple] = {}


def _ints(value: Any) -> list[int]:
  return np.asarray(value).astype(np.int64).ravel().tolist()


def _channel(vector: jax.Array, ndim: int) -> jax.Array:
  """A per-channel vector ``[C]`` shaped to broadcast over ``[N, C, *spatial]``."""
  return jnp.reshape(vector, (-1,) + (1,) * (ndim - 2))


def _layout(ndim: int) -> lax.ConvDimensionNumbers:
  """ONNX's layouts for ``lax.conv_general_dilated``: NC*, OI*, NC*."""
  axes = tuple(range(ndim))
  return lax.ConvDimensionNumbers(axes, axes, axes)


def _window(node: Node, spatial: tuple[int, ...], kernel: tuple[int, ...], *, pool: bool = False
            ) -> tuple[list[int], list[int], list[tuple[int, int]]]:
  """``(strides, dilations, pads)`` of a window op; pads ``(begin, end)`` per spatial axis.

  ``auto_pad`` SAME_UPPER/SAME_LOWER pad ``total = (ceil(size / s) - 1) s + k' - size``
  cells, the odd one at the end (UPPER) or at the beginning (LOWER); VALID pads none.
  A convolution takes ``k' = (k - 1) d + 1`` and ``total >= 0``; a pool, as onnxruntime
  does, ``k' = k`` and any ``total`` (a negative one skips cells), halved towards 0.
  """
  n = len(kernel)
  strides, dilations = node.attrs.get("strides", [1] * n), node.attrs.get("dilations", [1] * n)
  auto_pad = node.attrs.get("auto_pad", "NOTSET")
  if auto_pad == "VALID":
    return strides, dilations, [(0, 0)] * n
  if auto_pad == "NOTSET":
    pads = node.attrs.get("pads", [0] * 2 * n)
    return strides, dilations, list(zip(pads[:n], pads[n:]))
  pads = []
  for size, k, s, d in zip(spatial, kernel, strides, dilations):
    total = (-(-size // s) - 1) * s + (k if pool else (k - 1) * d + 1) - size
    total = total if pool else max(total, 0)
    begin = int((total + (auto_pad == "SAME_LOWER")) / 2)
    pads.append((begin, total - begin))
  return strides, dilations, pads


def _constant(node: Node) -> np.ndarray:
  """The value of the node's one ``value*`` attribute (a tensor, float(s) or int(s))."""
  [(key, value)] = node.attrs.items()
  return np.asarray(value, {"value_float": np.float32, "value_floats": np.float32,
                            "value_int": np.int64, "value_ints": np.int64}.get(key))


def _conv(node: Node, x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
  """``y[n, o] = b[o] + sum_{c in group(o), k} x_pad[n, c, s i + d k] w[o, c, k]``."""
  strides, dilations, pads = _window(node, x.shape[2:], w.shape[2:])
  y = lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilations,
                               dimension_numbers=_layout(x.ndim),
                               feature_group_count=node.attrs.get("group", 1))
  return y if b is None else y + _channel(b, y.ndim)


def _conv_transpose(node: Node, x: jax.Array, w: jax.Array, b: jax.Array | None = None
                    ) -> jax.Array:
  """The transpose of Conv: ``x`` dilated by the strides, padded ``d (k - 1) - pads``
  (plus ``output_padding`` at the end), convolved with ``w`` ``[C_in, C_out / group, *k]``
  flipped in space and its channels swapped within each group; output size
  ``s (size - 1) + output_padding + d (k - 1) + 1 - pad_begin - pad_end``."""
  group, kernel = node.attrs.get("group", 1), w.shape[2:]
  strides, dilations, pads = _window(node, x.shape[2:], kernel)
  extra = node.attrs.get("output_padding", [0] * len(kernel))
  c_in, c_out = w.shape[0] // group, w.shape[1]
  w = w.reshape(group, c_in, c_out, *kernel).swapaxes(1, 2).reshape(group * c_out, c_in, *kernel)
  w = jnp.flip(w, axis=tuple(range(2, w.ndim)))
  padding = [(d * (k - 1) - lo, d * (k - 1) - hi + e)
             for k, d, (lo, hi), e in zip(kernel, dilations, pads, extra)]
  y = lax.conv_general_dilated(x, w, (1,) * len(kernel), padding, lhs_dilation=strides,
                               rhs_dilation=dilations, dimension_numbers=_layout(x.ndim),
                               feature_group_count=group)
  return y if b is None else y + _channel(b, y.ndim)


def _gemm(node: Node, a: jax.Array, b: jax.Array, c: jax.Array | None = None) -> jax.Array:
  """``alpha A' B' + beta C``, ``A' = A^T`` if transA, ``B' = B^T`` if transB."""
  a = a.T if node.attrs.get("transA", 0) else a
  b = b.T if node.attrs.get("transB", 0) else b
  y = node.attrs.get("alpha", 1.0) * (a @ b)
  return y if c is None else y + node.attrs.get("beta", 1.0) * c


def _clip(node: Node, x: jax.Array, low: Any = None, high: Any = None) -> jax.Array:
  """``min(max(x, low), high)``; bounds are inputs from opset 11, attributes before."""
  low = node.attrs.get("min") if low is None else low
  high = node.attrs.get("max") if high is None else high
  return jnp.clip(x, low, high)


def _softmax(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """Softmax or LogSoftmax: along ``axis`` (default -1) from opset 13; before, over all the
  axes from ``axis`` (default 1) on, the input seen as a matrix."""
  def handler(node: Node, x: jax.Array) -> jax.Array:
    if node.opset >= 13:
      return fn(x, axis=node.attrs.get("axis", -1))
    axis = node.attrs.get("axis", 1) % x.ndim
    return fn(x.reshape(math.prod(x.shape[:axis]), -1), axis=1).reshape(x.shape)
  return handler


def _pool_padding(node: Node, x: jax.Array) -> tuple[list[int], list[int], list[int],
                                                    list[tuple[int, int]], list[int]]:
  """``(kernel, strides, dilations, pads, extra)``: ``extra`` the cells ``ceil_mode`` adds at
  the end, for ``out = ceil((size + pads - d (k - 1) - 1) / s) + 1`` windows, less one where
  the last would start beyond the input and its leading pad."""
  kernel = node.attrs["kernel_shape"]
  strides, dilations, pads = _window(node, x.shape[2:], kernel, pool=True)
  extra = [0] * len(kernel)
  if node.attrs.get("ceil_mode", 0):
    for i, (size, k, s, d, (lo, hi)) in enumerate(zip(x.shape[2:], kernel, strides, dilations,
                                                       pads)):
      span = size + lo + hi - d * (k - 1) - 1
      out = -(-span // s) + 1
      out -= (out - 1) * s >= size + lo
      extra[i] = max((out - 1) * s - span, 0)
  return kernel, strides, dilations, pads, extra


def _pad_spatial(x: jax.Array, fill: float, padding: list[tuple[int, int]]) -> jax.Array:
  """``x`` padded with ``fill`` by ``(begin, end)`` cells on each spatial axis (negative crop)."""
  return lax.pad(x, np.array(fill, x.dtype), [(0, 0, 0)] * 2 + [(lo, hi, 0) for lo, hi in padding])


def _cells(x: jax.Array, kernel: list[int], strides: list[int], dilations: list[int]
           ) -> list[jax.Array]:
  """The windows of a padded ``x`` as one array per kernel offset ``k``: ``x[n, c, s i + d k]``
  over the output positions ``i``.

  Slices rather than ``lax.reduce_window``: JAX has no gradient for a max over dilated
  windows, while these slices and an elementwise max or sum differentiate exactly (a max
  shares its gradient between tied cells).
  """
  sizes = [(size - d * (k - 1) - 1) // s + 1
           for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations)]
  return [x[(..., *[slice(o * d, o * d + (n - 1) * s + 1, s)
                    for o, d, s, n in zip(offset, dilations, strides, sizes)])]
          for offset in itertools.product(*map(range, kernel))]


def _max_pool(node: Node, x: jax.Array) -> jax.Array:
  """``max`` over each window; pads and ceil_mode cells are ``-inf``."""
  kernel, strides, dilations, pads, extra = _pool_padding(node, x)
  padded = _pad_spatial(x, -np.inf, [(lo, hi + e) for (lo, hi), e in zip(pads, extra)])
  return functools.reduce(jnp.maximum, _cells(padded, kernel, strides, dilations))


def _average_pool(node: Node, x: jax.Array) -> jax.Array:
  """``sum(x) / count`` over each window; ``count`` counts its cells in the input, plus
  those in ``pads`` if count_include_pad (never the ones ceil_mode adds)."""
  kernel, strides, dilations, pads, extra = _pool_padding(node, x)
  padded = _pad_spatial(x, 0, [(lo, hi + e) for (lo, hi), e in zip(pads, extra)])
  inside = _pad_spatial(np.ones((1, 1, *x.shape[2:]), x.dtype),
                        node.attrs.get("count_include_pad", 0), pads)
  counts = _cells(_pad_spatial(inside, 0, [(0, e) for e in extra]), kernel, strides, dilations)
  return sum(_cells(padded, kernel, strides, dilations)) / sum(counts)


def _batch_norm(node: Node, x: jax.Array, scale: jax.Array, bias: jax.Array, mean: jax.Array,
                var: jax.Array) -> jax.Array:
  """Inference: ``(x - mean) scale / sqrt(var + epsilon) + bias`` per channel."""
  gain = scale / jnp.sqrt(var + node.attrs.get("epsilon", 1e-5))
  return (x - _channel(mean, x.ndim)) * _channel(gain, x.ndim) + _channel(bias, x.ndim)


def _flatten(node: Node, x: jax.Array) -> jax.Array:
  """``[prod(shape[:axis]), prod(shape[axis:])]``."""
  axis = node.attrs.get("axis", 1)
  axis = axis + x.ndim if axis < 0 else axis
  return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _reshape(node: Node, x: jax.Array, shape: np.ndarray) -> jax.Array:
  """A 0 in ``shape`` keeps the input's size there (unless allowzero); -1 is inferred."""
  keep = not node.attrs.get("allowzero", 0)
  return x.reshape([x.shape[i] if size == 0 and keep else size
                    for i, size in enumerate(_ints(shape))])


def _pad(node: Node, x: jax.Array, pads: Any = None, value: Any = None, axes: Any = None
         ) -> jax.Array:
  """``pads = [begins..., ends...]`` over ``axes`` (negative pads crop); mode constant
  (``value``, default 0), reflect or edge. pads and value are attributes before opset 11."""
  pads = node.attrs["pads"] if pads is None else _ints(pads)
  value = node.attrs.get("value", 0.0) if value is None else value
  axes = range(x.ndim) if axes is None else _ints(axes)
  widths = [(0, 0)] * x.ndim
  for i, axis in enumerate(axes):
    widths[axis % x.ndim] = (pads[i], pads[i + len(axes)])
  mode = node.attrs.get("mode", "constant")
  if mode == "constant":
    return lax.pad(x, np.asarray(value, x.dtype).reshape(()), [(lo, hi, 0) for lo, hi in widths])
  return jnp.pad(x, widths, mode=mode)


def _source_coordinates(mode: str, out_size: int, in_size: int, scale: np.float32) -> np.ndarray:
  """Resize's ``coordinate_transformation_mode``: where each output cell samples the input,
  in float32 as onnxruntime computes it (a sample can fall on the other side of a rounding
  boundary in float64)."""
  x = np.arange(out_size, dtype=np.float32)
  if mode == "asymmetric":
    return x / scale
  if mode == "align_corners":
    return x * (in_size - 1) / (out_size - 1) if out_size > 1 else 0 * x
  if mode == "tf_half_pixel_for_nn":
    return (x + 0.5) / scale
  if mode == "pytorch_half_pixel" and out_size == 1:
    return 0 * x
  return (x + 0.5) / scale - 0.5  # half_pixel, pytorch_half_pixel


_ROUNDING = {"round_prefer_floor": lambda c: np.ceil(c - 0.5),
             "round_prefer_ceil": lambda c: np.floor(c + 0.5), "floor": np.floor, "ceil": np.ceil}


def _resize_axis(node: Node, x: jax.Array, axis: int, size: int, scale: np.float32
                 ) -> jax.Array:
  """One axis: the nearest input cell, or ``(1 - t) x[floor c] + t x[floor c + 1]``,
  ``t = c - floor c``, ``c`` the source coordinate (clamped to the input when linear)."""
  old = node.opset < 11  # Resize-10 samples as Upsample: asymmetric, nearest by floor
  mode = node.attrs.get("coordinate_transformation_mode", "asymmetric" if old else "half_pixel")
  coords, last = _source_coordinates(mode, size, x.shape[axis], scale), x.shape[axis] - 1
  if node.attrs.get("mode", "nearest") == "nearest":
    rounding = _ROUNDING[node.attrs.get("nearest_mode", "floor" if old else "round_prefer_floor")]
    return jnp.take(x, np.clip(rounding(coords), 0, last).astype(np.int64), axis=axis)
  coords = np.clip(coords, 0, last)
  low = np.floor(coords).astype(np.int64)
  shape = [1] * x.ndim
  shape[axis] = size
  t = (coords - low).reshape(shape).astype(x.dtype)
  high = np.minimum(low + 1, last)
  return jnp.take(x, low, axis=axis) * (1 - t) + jnp.take(x, high, axis=axis) * t


def _resize(node: Node, x: jax.Array, roi: Any = None, scales: Any = None, sizes: Any = None
            ) -> jax.Array:
  """Nearest or (multi)linear resizing, one axis after another, to ``floor(size * scale)``
  or to ``sizes`` (then ``scale = out / in``). Opset 10 takes ``(X, scales)``."""
  if node.opset < 11:
    roi, scales = None, roi
  axes = node.attrs.get("axes", list(range(x.ndim)))
  in_sizes = [x.shape[axis] for axis in axes]
  if sizes is not None and np.size(sizes):
    sizes = _ints(sizes)
    scales = [np.float32(out) / np.float32(size) for out, size in zip(sizes, in_sizes)]
  else:
    scales = list(np.asarray(scales, np.float32).ravel())
    sizes = [math.floor(np.float32(size) * scale) for size, scale in zip(in_sizes, scales)]
  for axis, size, scale in zip(axes, sizes, scales):
    if size != x.shape[axis] or scale != 1:
      x = _resize_axis(node, x, axis % x.ndim, size, scale)
  return x


def _slice(node: Node, x: jax.Array, starts: Any = None, ends: Any = None, axes: Any = None,
           steps: Any = None) -> jax.Array:
  """``x[starts:ends:steps]`` on ``axes``, clamped as Python clamps; attributes before opset 10."""
  if node.opset < 10:
    starts, ends, axes = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes")
  starts, ends = _ints(starts), _ints(ends)
  axes = range(len(starts)) if axes is None else _ints(axes)
  steps = [1] * len(starts) if steps is None else _ints(steps)
  index = [slice(None)] * x.ndim
  for axis, start, end, step in zip(axes, starts, ends, steps):
    index[axis % x.ndim] = slice(start, end, step)
  return x[tuple(index)]


def _axes(node: Node, axes: Any) -> list[int] | None:
  """The ``axes`` input (newer opsets) or attribute (older ones), None if neither."""
  return node.attrs.get("axes") if axes is None else _ints(axes)


def _reduce(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """ReduceSum/ReduceMean over ``axes`` (all if none, or none if noop_with_empty_axes)."""
  def handler(node: Node, x: jax.Array, axes: Any = None) -> jax.Array:
    axes = _axes(node, axes)
    if not axes and node.attrs.get("noop_with_empty_axes", 0):
      return x
    return fn(x, axis=tuple(axes) if axes else None, keepdims=bool(node.attrs.get("keepdims", 1)))
  return handler


def _squeeze(node: Node, x: jax.Array, axes: Any = None) -> jax.Array:
  axes = _axes(node, axes)
  return jnp.squeeze(x, axis=None if axes is None else tuple(axes))


def _unsqueeze(node: Node, x: jax.Array, axes: Any = None) -> jax.Array:
  axes = _axes(node, axes)
  return jnp.expand_dims(x, tuple(axis % (x.ndim + len(axes)) for axis in axes))


_AUTO_PAD = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")

# BatchNormalization and Dropout as at inference: a frozen classifier.
OPS: dict[str, Op] = {
    "Add": Op(lambda node, a, b: jnp.add(a, b)),
    "AveragePool": Op(_average_pool, allowed={"auto_pad": _AUTO_PAD}),
    "BatchNormalization": Op(_batch_norm, allowed={"training_mode": (0,), "spatial": (1,)}),
    "Clip": Op(_clip),
    "Concat": Op(lambda node, *xs: jnp.concatenate(xs, axis=node.attrs["axis"])),
    "Constant": Op(_constant,
                   allowed={"sparse_value": (), "value_string": (), "value_strings": ()}),
    "Conv": Op(_conv, allowed={"auto_pad": _AUTO_PAD}),
    "ConvTranspose": Op(_conv_transpose,
                        allowed={"auto_pad": ("NOTSET", "VALID"), "output_shape": ()}),
    "Abs": Op(lambda node, x: jnp.abs(x)),
    "Div": Op(lambda node, a, b: jnp.divide(a, b)),
    "Dropout": Op(lambda node, x, *ratio_and_mode: x, static=(1, 2), allowed={"is_test": (1,)}),
    "Erf": Op(lambda node, x: erf(x)),
    "Exp": Op(lambda node, x: jnp.exp(x)),
    "Flatten": Op(_flatten),
    "Gemm": Op(_gemm),
    "GlobalAveragePool": Op(lambda node, x: jnp.mean(x, axis=tuple(range(2, x.ndim)),
                                                     keepdims=True)),
    "GlobalMaxPool": Op(lambda node, x: jnp.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)),
    "HardSigmoid": Op(lambda node, x: jnp.clip(
        node.attrs.get("alpha", 0.2) * x + node.attrs.get("beta", 0.5), 0.0, 1.0)),
    "HardSwish": Op(lambda node, x: x * jnp.clip(x / 6 + 0.5, 0.0, 1.0)),
    "Identity": Op(lambda node, x: x),
    "LeakyRelu": Op(lambda node, x: jax.nn.leaky_relu(x, node.attrs.get("alpha", 0.01))),
    "Log": Op(lambda node, x: jnp.log(x)),
    "LogSoftmax": Op(_softmax(jax.nn.log_softmax)),
    "MatMul": Op(lambda node, a, b: jnp.matmul(a, b)),
    "Max": Op(lambda node, *xs: functools.reduce(jnp.maximum, xs)),
    "MaxPool": Op(_max_pool, allowed={"auto_pad": _AUTO_PAD}),
    "Min": Op(lambda node, *xs: functools.reduce(jnp.minimum, xs)),
    "Mul": Op(lambda node, a, b: jnp.multiply(a, b)),
    "Neg": Op(lambda node, x: jnp.negative(x)),
    "Pad": Op(_pad, static=(1, 2, 3), allowed={"mode": ("constant", "reflect", "edge")}),
    "Pow": Op(lambda node, x, exponent: jnp.power(x, exponent)),
    "ReduceMean": Op(_reduce(jnp.mean), static=(1,)),
    "ReduceSum": Op(_reduce(jnp.sum), static=(1,)),
    "Relu": Op(lambda node, x: jax.nn.relu(x)),
    "Reshape": Op(_reshape, static=(1,)),
    "Resize": Op(_resize, static=(1, 2, 3), allowed={
        "mode": ("nearest", "linear"), "antialias": (0,), "keep_aspect_ratio_policy": ("stretch",),
        "nearest_mode": tuple(_ROUNDING), "coordinate_transformation_mode": (
            "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
            "tf_half_pixel_for_nn")}),
    "Sigmoid": Op(lambda node, x: jax.nn.sigmoid(x)),
    "Slice": Op(_slice, static=(1, 2, 3, 4)),
    "Softmax": Op(_softmax(jax.nn.softmax)),
    "Softplus": Op(lambda node, x: jax.nn.softplus(x)),
    "Sqrt": Op(lambda node, x: jnp.sqrt(x)),
    "Squeeze": Op(_squeeze, static=(1,)),
    "Sub": Op(lambda node, a, b: jnp.subtract(a, b)),
    "Tanh": Op(lambda node, x: jnp.tanh(x)),
    "Transpose": Op(lambda node, x: jnp.transpose(x, node.attrs.get("perm"))),
    "Unsqueeze": Op(_unsqueeze, static=(1,)),
}
