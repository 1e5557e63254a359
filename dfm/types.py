"""The shapes of what the pure core passes around: batches, states, steps, metrics.

Every state and batch is a plain dict (a pytree), typed here so that a user who
composes dfm's functions in their own JAX code knows each key:

- :class:`Batch`: ``{"image", "label", "mask"?}``;
- :class:`NoiseState`: ``{"noise", "opt", "step"}``, the white-box DFT state;
- :class:`QueryState`: the noise state plus ``key``, ``queries`` (the ledger of
  what was sent to a black box) and ``best`` (the noise selection keeps).

Example::

  batch: Batch = {"image": jnp.zeros((8, 28, 28, 1)), "label": jnp.zeros(8, jnp.int32)}
"""
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

import jax
import numpy as np
import optax

PyTree = Any
# ``apply_fn(params, images [B, H, W, C] in [0, 1]) -> logits [B, K]``: the frozen model.
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
# A foreign model on its own input tensor (before dfm's InputSpec): fn(params, tensor).
ModelFn = Callable[[PyTree, jax.Array], jax.Array]
# A flat dict of scalars, fetched to the host only when logged.
Metrics = dict[str, jax.Array]


class Batch(TypedDict):
  """Images and labels; ``mask`` (optional) is 0 on padding rows, 1 on real ones."""

  image: jax.Array  # [B, H, W, C], pixels in [0, 1]
  label: jax.Array  # [B] integer classes
  mask: NotRequired[jax.Array]  # [B] weights, 0 on padding rows


class NoiseState(TypedDict):
  """White-box DFT: the noise (any pytree of float arrays), its optimizer state, the step."""

  noise: PyTree
  opt: optax.OptState
  step: jax.Array  # int32 scalar: updates done


class Ledger(TypedDict):
  """What was sent to a black box: answered ``calls``, ``images`` they scored, and
  ``failures`` (attempts that failed, retried or not). 0-d int64 arrays in a state."""

  calls: np.ndarray
  images: np.ndarray
  failures: np.ndarray


class Best(TypedDict):
  """The noise selection keeps: its validation accuracy, which validation images it
  (and ``N = 0``) gets right, the batch after which it was scored and the images
  spent by then (``batch`` 0: no noise, ``N = 0``)."""

  noise: PyTree
  val_accuracy: np.ndarray
  correct: np.ndarray
  zero_correct: np.ndarray
  batch: np.ndarray
  images: np.ndarray


class QueryState(NoiseState):
  """Query-only DFT: the noise state plus the RNG ``key`` data (directions come from
  ``fold_in(key, step)``), the last ``estimate`` of ``grad C`` and the noise's
  ``velocity`` (its last move per update), the ledger ``queries`` and the selected
  ``best``. An evolution strategy keeps its own state in ``opt``."""

  key: jax.Array
  estimate: PyTree
  velocity: PyTree
  queries: Ledger
  best: Best


# ``step(state, params, batch) -> (state, metrics)``: one pure white-box update.
UpdateStep = Callable[[NoiseState, PyTree, Batch], tuple[NoiseState, Metrics]]
