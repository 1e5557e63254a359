"""Shape checks shared by an ONNX graph and a server's metadata, without onnxruntime.

A model's input must take ``[N, *spec.shape]`` and its output be ``[N, num_classes]``
(or, for a model that answers only its top k classes, scores and classes both
``[N, k]``). Sizes are lists with None where a size is symbolic; a mismatch is
a ValueError naming the config field to fix. Neither onnx nor onnxruntime is
imported here, so an HTTP client checks a server without them.

Example::

  check_input_dims([None, 3, 32, 32], spec, source="The ONNX input 'images'")
  check_class_dims([None, 2], 2, source="The ONNX output 'probabilities'")
"""
import numpy as np

from dfm.models.input_spec import OUTPUT_KINDS, InputSpec


def _shown(dims: list[int | None]) -> list[int]:
  return [-1 if d is None else d for d in dims]


def check_output_kind(kind: str) -> None:
  """``kind`` is one of :data:`OUTPUT_KINDS`.

  Example::

    check_output_kind("logits")  # passes; "scores" raises
  """
  if kind not in OUTPUT_KINDS:
    raise ValueError(f"config.black_box.output_kind={kind!r} is not one of {OUTPUT_KINDS}.")


def check_input_dims(dims: list[int | None], spec: InputSpec, *, source: str) -> None:
  """A model input of ``dims`` (None: symbolic) takes ``[N, *spec.shape]``.

  Example::

    check_input_dims([None, 3, 4, 4], spec, source="The ONNX input 'images'")  # NCHW 4x4 RGB
  """
  expected = [None, *spec.shape]
  if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], expected[1:])):
    raise ValueError(
        f"{source} has shape {_shown(dims)} but config.black_box.input declares "
        f"{spec.layout} {_shown(expected)}: fix its layout, channels or size.")


def check_class_dims(dims: list[int | None], num_classes: int, *, source: str) -> None:
  """A model output of ``dims`` (None: symbolic) is ``[N, num_classes]``.

  Example::

    check_class_dims([None, 2], 2, source="The ONNX output 'probabilities'")
  """
  if len(dims) != 2 or dims[1] not in (None, num_classes):
    raise ValueError(f"{source} has shape {_shown(dims)}; config.model.num_classes="
                     f"{num_classes} needs [-1, {num_classes}].")


def check_top_k(scores: list[int | None], classes: list[int | None], kind: str,
                num_classes: int, *, source: str) -> None:
  """A top-k reply: scores and classes both ``[N, k]``, k <= classes, probabilities.

  Example::

    check_top_k([None, 2], [None, 2], "probabilities", 4, source="The ONNX output")
  """
  if kind != "probabilities":
    raise ValueError("A top-k model (config.black_box.classes_name) must answer probabilities: "
                     "the scores of k classes cannot be normalised. Set output_kind.")
  fits = len(scores) == 2 and (scores[1] is None or scores[1] <= num_classes)
  if not fits or len(classes) != 2 or classes[1] != scores[1]:
    raise ValueError(f"{source} has top-k scores of shape {scores} and classes of shape "
                     f"{classes}; both must be [N, k] with k <= config.model.num_classes="
                     f"{num_classes}.")


def softmax(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax on the host, in float64 for stability, returned as float32.

  Example::

    softmax(np.array([[0.0, 0.0]]))  # [[0.5, 0.5]]
  """
  shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
  exp = np.exp(shifted)
  return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
