"""Training the classifier that DFT later freezes (the paper's pre-training step)."""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dfm import losses
from dfm.dft import ApplyFn, Batch, Metrics

TrainState = dict[str, Any]


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  """``{"params", "opt", "step"}`` for training the classifier's weights."""
  return {"params": params, "opt": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def make_train_step(
    apply_fn: ApplyFn, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """Returns the pure step minimising softmax cross-entropy over the weights.

  Example::

    step = jax.jit(make_train_step(apply_fn, optax.adam(1e-3)))
    state, metrics = step(init_train_state(params, optax.adam(1e-3)), batch)
  """

  def loss_fn(params: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
    logits = apply_fn(params, batch["image"])
    mask = batch.get("mask")
    loss = losses.softmax_xent(logits=logits, labels=batch["label"], weights=mask)
    accuracy = losses.accuracy(logits=logits, labels=batch["label"], weights=mask)
    return loss, {"loss": loss, "accuracy": accuracy}

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt = optimizer.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return {"params": params, "opt": opt, "step": state["step"] + 1}, metrics

  return train_step
