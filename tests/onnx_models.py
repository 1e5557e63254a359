"""Small real ONNX classifiers for tests, written with ``onnx.helper``.

``linear_classifier`` computes ``logits = flatten(x) @ W + b``,
``probabilities = softmax(logits)`` and the 2 most probable classes, ``top_scores``
and ``top_classes``, over an ``[N, *input_shape]`` float input, and exposes the
``outputs`` asked for. ``head`` says how ``probabilities`` is computed, as exporters
do: ``softmax`` (a Softmax node), ``exp_div`` (``exp(logits) / sum(exp(logits))``:
Exp, ReduceSum, Div) or ``softmax_identity`` (an Identity after the Softmax).
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


HEADS = ("softmax", "exp_div", "softmax_identity")


def _probabilities(head: str) -> list[onnx.NodeProto]:
  """The nodes that turn ``logits`` into ``probabilities`` the way ``head`` names."""
  if head == "exp_div":
    return [helper.make_node("Exp", ["logits"], ["exp"]),
            helper.make_node("ReduceSum", ["exp", "axes"], ["total"], keepdims=1),
            helper.make_node("Div", ["exp", "total"], ["probabilities"])]
  if head == "softmax_identity":
    return [helper.make_node("Softmax", ["logits"], ["softmax"], axis=1),
            helper.make_node("Identity", ["softmax"], ["probabilities"])]
  assert head == "softmax", f"head {head!r} is not one of {HEADS}"
  return [helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]


def linear_classifier(path: Path, *, input_shape: tuple[int, int, int], num_classes: int,
                      outputs: tuple[str, ...] = ("probabilities",), seed: int = 0,
                      input_name: str = "images",
                      head: str = "softmax") -> tuple[np.ndarray, np.ndarray]:
  """Writes the model to ``path``; returns its ``(W, b)`` for a NumPy reference."""
  rng = np.random.default_rng(seed)
  weights = rng.normal(0, 0.3, (int(np.prod(input_shape)), num_classes)).astype(np.float32)
  bias = rng.normal(0, 0.1, num_classes).astype(np.float32)
  nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1),
           helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])]
  nodes += [*_probabilities(head),
            helper.make_node("TopK", ["probabilities", "k"], ["top_scores", "top_classes"], axis=1)]
  types = {"top_classes": TensorProto.INT64}
  widths = {"top_scores": 2, "top_classes": 2}
  graph = helper.make_graph(
      nodes, "linear_classifier",
      [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *input_shape])],
      [helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT),
                                     ["N", widths.get(name, num_classes)]) for name in outputs],
      initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b"),
                   numpy_helper.from_array(np.array([2], np.int64), "k"),
                   numpy_helper.from_array(np.array([1], np.int64), "axes")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return weights, bias
