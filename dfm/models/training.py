"""Fitting the classifier's weights: pre-training, and model fine-tuning (MFT)."""
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dfm import losses
from dfm.transform import Transform, get_transform, perturb
from dfm.types import ApplyFn, Batch, Metrics

TrainState = dict[str, Any]
TrainStep = Callable[..., tuple[TrainState, Metrics]]
# Which weights MFT updates: every layer, or the dense NNET head on top of the convs.
MFT_LAYERS = ("all", "head")
HEAD_PREFIX = "Dense"
# A foreign model's params (dfm.models.foreign): the weights MFT moves, and the state it
# never moves (batch norm statistics, Keras non-trainable variables).
FOREIGN_PARAMS = ("trainable", "fixed")


def _is_foreign(params: Any) -> bool:
  return isinstance(params, dict) and set(params) == set(FOREIGN_PARAMS)


def trainable_part(params: Any) -> Any:
  """What training moves: all of dfm's VGG params, a foreign model's ``trainable``."""
  return params["trainable"] if _is_foreign(params) else params


def with_trainable(params: Any, part: Any) -> Any:
  """``params`` with :func:`trainable_part` replaced by ``part`` (the rest kept)."""
  return {"trainable": part, "fixed": params["fixed"]} if _is_foreign(params) else part


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  """``{"params", "opt", "step"}`` for training the classifier's weights; the optimizer
  sees only :func:`trainable_part`."""
  return {"params": params, "opt": optimizer.init(trainable_part(params)),
          "step": jnp.zeros((), jnp.int32)}


def restrict_to_layers(
    optimizer: optax.GradientTransformation, params: Any, layers: str
) -> optax.GradientTransformation:
  """``optimizer`` on the chosen ``layers`` (:data:`MFT_LAYERS`); the others never move.

  ``head`` updates the top-level modules named ``Dense_*`` (the NNET) and zeroes
  the updates of the convolutions. Of a foreign model's params
  (:data:`FOREIGN_PARAMS`) the optimizer only ever sees ``trainable`` (``all``).

  Example::

    optimizer = restrict_to_layers(optax.adam(5e-3), params, "head")
  """
  if layers not in MFT_LAYERS:
    raise ValueError(f"Unknown layers {layers!r} to fine-tune; choose one of {MFT_LAYERS}.")
  if _is_foreign(params) and layers == "head":
    raise ValueError("mft.layers='head' picks the Dense_* layers of dfm's VGG; a model "
                     "of your own fine-tunes all its trainable weights: "
                     "--config.mft.layers=all.")
  if layers == "all":
    return optimizer
  labels = {name: "train" if name.startswith(HEAD_PREFIX) else "frozen" for name in params}
  if "train" not in labels.values():
    raise ValueError(f"mft.layers='head' updates the top-level params named {HEAD_PREFIX}_*, "
                     f"and this model has none (it has {sorted(params)[:8]}): use "
                     "--config.mft.layers=all.")
  return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)


def make_train_step(
    apply_fn: ApplyFn, optimizer: optax.GradientTransformation, *,
    transform: str | Transform = "tanh"
) -> TrainStep:
  """Returns the pure step minimising softmax cross-entropy over the weights
  (:func:`trainable_part`: a foreign model's running statistics and other state
  are neither differentiated nor moved).

  ``step(state, batch, noise=None)`` fits the images as they are, or, given a
  noise, their perturbed versions ``Z = perturb(X, noise, transform=transform)`` (the MFT
  half of DFT+MFT). The noise is an input here, never updated.

  Example::

    step = jax.jit(make_train_step(apply_fn, optax.adam(1e-3)))
    state, metrics = step(init_train_state(params, optax.adam(1e-3)), batch)
  """

  perturb_fn = functools.partial(perturb, transform=get_transform(transform))

  def loss_fn(params: Any, batch: Batch, noise: Any) -> tuple[jax.Array, Metrics]:
    images = batch["image"] if noise is None else perturb_fn(batch["image"], noise)
    logits = apply_fn(params, images)
    mask = batch.get("mask")
    loss = losses.softmax_xent(logits=logits, labels=batch["label"], weights=mask)
    accuracy = losses.accuracy(logits=logits, labels=batch["label"], weights=mask)
    return loss, {"loss": loss, "accuracy": accuracy}

  def train_step(state: TrainState, batch: Batch, noise: Any = None) -> tuple[TrainState, Metrics]:
    part = trainable_part(state["params"])
    grads, metrics = jax.grad(
        lambda part: loss_fn(with_trainable(state["params"], part), batch, noise),
        has_aux=True)(part)
    updates, opt = optimizer.update(grads, state["opt"], part)
    params = with_trainable(state["params"], optax.apply_updates(part, updates))
    metrics["grad_norm"] = optax.tree.norm(grads)
    return {"params": params, "opt": opt, "step": state["step"] + 1}, metrics

  return train_step
