"""Shape and output-kind checks shared by an ONNX graph and a server, without onnxruntime.

A model's input must take ``[N, *spec.shape]`` and its output be ``[N, num_classes]``
(or, for a model that answers only its top k classes, scores and classes both
``[N, k]``). Sizes are lists with None where a size is symbolic; a mismatch is
a ValueError naming the config field to fix. Neither onnx nor onnxruntime is
imported here, so an HTTP client checks a server without them.

Whether a black box answers probabilities or logits is decided from its numbers,
never from the graph's last node (a ``Div`` of ``exp`` or an ``Identity`` after a
Softmax answers probabilities too): :func:`decide_output_kind` on the scores of
:func:`probe_images` (an ONNX file, at load) or of the first reply (a server).

Example::

  check_input_dims([None, 3, 32, 32], spec, source="The ONNX input 'images'")
  check_class_dims([None, 2], 2, source="The ONNX output 'probabilities'")
  decide_output_kind([[0.2, 0.8]], "auto", source="the model", seen="")  # "probabilities"
"""
import numpy as np

from dfm.black_box.base import SUM_TOLERANCE
from dfm.models.input_spec import OUTPUT_KINDS, InputSpec

# A black box may also leave its output kind to the numbers ("auto"); a white-box
# model declares one of OUTPUT_KINDS.
BLACK_BOX_OUTPUT_KINDS = (*OUTPUT_KINDS, "auto")


def _shown(dims: list[int | None]) -> list[int]:
  return [-1 if d is None else d for d in dims]


def check_output_kind(kind: str) -> None:
  """``kind`` is one of :data:`BLACK_BOX_OUTPUT_KINDS`.

  Example::

    check_output_kind("auto")  # passes; "scores" raises
  """
  if kind not in BLACK_BOX_OUTPUT_KINDS:
    raise ValueError(f"config.black_box.output_kind={kind!r} is not one of "
                     f"{BLACK_BOX_OUTPUT_KINDS}.")


def probe_images(spec: InputSpec) -> np.ndarray:
  """Four fixed images ``[4, H, W, C]`` in [0, 1] for ``spec``: all 0, all 1, all 0.5,
  and uniform noise (seed 0). Scoring them shows what kind of output a model has.

  Example::

    probe_images(spec).shape  # (4, 32, 32, 3) for a 32x32 RGB input
  """
  shape = (*spec.size, spec.channels)
  noise = np.random.default_rng(0).uniform(size=shape)
  return np.stack([np.zeros(shape), np.ones(shape), np.full(shape, 0.5), noise]).astype(
      np.float32)


def is_probabilities(scores: np.ndarray) -> bool:
  """Every row of ``scores [N, K]`` lies in [0, 1] and sums to 1 (within float32 rounding).

  Example::

    is_probabilities(np.array([[0.25, 0.75]]))  # True; [[2.0, -1.0]] is False
  """
  values = np.asarray(scores, np.float64)
  in_range = np.all((values >= 0) & (values <= 1 + SUM_TOLERANCE))
  return bool(values.ndim == 2 and in_range
              and np.all(np.abs(values.sum(axis=1) - 1) <= SUM_TOLERANCE))


def _row(values: np.ndarray) -> str:
  return np.array2string(values, precision=4, separator=", ", threshold=12)


def decide_output_kind(scores: np.ndarray, declared: str, *, source: str, seen: str) -> str:
  """``"probabilities"`` if every row of ``scores [N, K]`` is in [0, 1] and sums to 1,
  else ``"logits"``; a ``declared`` kind other than ``"auto"`` must agree.

  ``source`` names the model and ``seen`` the batch scored, for the messages.

  Example::

    decide_output_kind([[2.0, -1.0]], "auto", source="the model", seen="")  # "logits"
    decide_output_kind([[0.2, 0.8]], "logits", source="the model", seen="")  # raises

  Raises:
    ValueError: non-finite scores, or a declared kind the numbers contradict.
  """
  check_output_kind(declared)
  values = np.asarray(scores, np.float64)
  if not np.all(np.isfinite(values)):
    raise ValueError(f"The outputs of {source} {seen} hold NaN or infinite values: refusing "
                     "the model.")
  found = "probabilities" if is_probabilities(values) else "logits"
  if declared in ("auto", found):
    return found
  first = _row(values[0])
  if found == "probabilities":
    raise ValueError(f"config.black_box.output_kind='logits', but the outputs of {source} "
                     f"{seen} are rows in [0, 1] summing to 1 (first row {first}): declare "
                     "probabilities or auto.")
  raise ValueError(f"config.black_box.output_kind='probabilities', but the outputs of {source} "
                   f"{seen} are not probabilities: rows sum to {_row(values.sum(axis=1))}, "
                   f"values in [{values.min():.4g}, {values.max():.4g}] (first row {first}): "
                   "declare logits or auto.")


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
  """A top-k reply: scores and classes both ``[N, k]``, k <= classes, probabilities
  (``kind`` probabilities, or auto, which for top-k can only mean probabilities).

  Example::

    check_top_k([None, 2], [None, 2], "probabilities", 4, source="The ONNX output")
  """
  if kind not in ("probabilities", "auto"):
    raise ValueError("A top-k model (config.black_box.classes_name) must answer probabilities: "
                     "the scores of k classes cannot be normalised. Set output_kind to "
                     "probabilities or auto.")
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
