"""Small real ONNX classifiers for tests, written with ``onnx.helper``.

``linear_classifier`` is ``softmax(flatten(x) @ W + b)`` over an ``[N, C, H, W]``
(or ``[N, H, W, C]``) float input; with ``softmax=False`` the output is the logits.
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear_classifier(path: Path, *, input_shape: tuple[int, int, int], num_classes: int,
                      seed: int = 0, softmax: bool = True, input_name: str = "images",
                      output_name: str = "probabilities") -> tuple[np.ndarray, np.ndarray]:
  """Writes the model to ``path``; returns its ``(W, b)`` for a NumPy reference."""
  rng = np.random.default_rng(seed)
  weights = rng.normal(size=(int(np.prod(input_shape)), num_classes)).astype(np.float32)
  bias = rng.normal(size=num_classes).astype(np.float32)
  last = output_name if not softmax else "logits"
  nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1),
           helper.make_node("Gemm", ["flat", "W", "b"], [last])]
  if softmax:
    nodes.append(helper.make_node("Softmax", ["logits"], [output_name], axis=1))
  graph = helper.make_graph(
      nodes, "linear_classifier",
      [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *input_shape])],
      [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", num_classes])],
      initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, str(path))
  return weights, bias
