"""Fitting the classifier's weights: pre-training, and model fine-tuning (MFT)."""
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dfm import losses
from dfm.transform import Transform, get_transform, perturb
from dfm.types import ApplyFn, Batch, Metrics

TrainState = dict[str, Any]
TrainStep = Callable[..., tuple[TrainState, Metrics]]
# Which weights MFT updates: every layer, the dense NNET head on top of the convs, or
# only the output layer (the linear probe's, :func:`output_layer`).
MFT_LAYERS = ("all", "head", "output")
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


def output_layer(params: Any, num_classes: int) -> list[str]:
  """The key paths (``jax.tree_util.keystr``) of the output layer in the trainable
  params: the one weight matrix with ``num_classes`` on an axis, and the vector of
  ``num_classes`` biases beside it (in the same container), if there is one. So for
  any model kind, the layer that maps the penultimate features to the class scores:
  dfm's VGG ``Dense_2``, an ONNX graph's last Gemm, a Keras model's last Dense.

  Raises:
    ValueError: no such matrix, or several (named): the output layer is ambiguous.

  >>> output_layer({"Dense_0": {"kernel": np.zeros((8, 4)), "bias": np.zeros(4)},
  ...               "Dense_1": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)}}, 3)
  ["['Dense_1']['bias']", "['Dense_1']['kernel']"]
  """
  leaves = jax.tree_util.tree_flatten_with_path(trainable_part(params))[0]
  matrices = [path for path, leaf in leaves
              if np.ndim(leaf) == 2 and num_classes in np.shape(leaf)]
  if len(matrices) != 1:
    found = [jax.tree_util.keystr(path) for path in matrices]
    raise ValueError(
        f"The output layer is the one weight matrix with {num_classes} (num_classes) on an "
        f"axis; the model has {len(found)}: {found[:6]}. The linear probe and "
        "mft.layers='output' need exactly one: leave the probe out (label_curve: "
        "--methods without probe) and fine-tune with mft.layers='all'.")
  parent = matrices[0][:-1]
  biases = [path for path, leaf in leaves
            if path[:-1] == parent and np.shape(leaf) == (num_classes,)]
  bias = biases if len(biases) == 1 else []  # Several: none of them is surely its own.
  return sorted(jax.tree_util.keystr(path) for path in matrices + bias)


def reset_output_layer(params: Any, num_classes: int) -> Any:
  """``params`` with the output layer (:func:`output_layer`) at zeros: a new linear
  head on the frozen features, where a linear probe starts (its loss is convex)."""
  chosen = set(output_layer(params, num_classes))
  part = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.zeros_like(leaf) if jax.tree_util.keystr(path) in chosen else leaf,
      trainable_part(params))
  return with_trainable(params, part)


def restrict_to_layers(
    optimizer: optax.GradientTransformation, params: Any, layers: str, *, num_classes: int = 0
) -> optax.GradientTransformation:
  """``optimizer`` on the chosen ``layers`` (:data:`MFT_LAYERS`); the others never move.

  ``head`` updates the top-level modules named ``Dense_*`` (the NNET) and zeroes
  the updates of the convolutions; ``output`` only the output layer of
  ``num_classes`` scores (:func:`output_layer`, any model kind). Of a foreign
  model's params (:data:`FOREIGN_PARAMS`) the optimizer only ever sees ``trainable``.

  Example::

    optimizer = restrict_to_layers(optax.adam(5e-3), params, "head")
  """
  if layers not in MFT_LAYERS:
    raise ValueError(f"Unknown layers {layers!r} to fine-tune; choose one of {MFT_LAYERS}.")
  if layers == "output":
    chosen = set(output_layer(params, num_classes))
    labels = jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if jax.tree_util.keystr(path) in chosen else "frozen",
        trainable_part(params))
    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)
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
