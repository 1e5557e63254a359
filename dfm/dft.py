"""The DFT state and its update step: gradient descent on the noise, model frozen.

The state is a plain dict ``{"noise", "opt", "step"}``. The frozen classifier
enters only as ``apply_fn(params, images) -> logits`` and its ``params`` are an
argument of every step: never updated, never captured as constants, never seen by
the optimizer. Batches are dicts ``{"image": [B,H,W,C] in [0,1], "label": [B],
"mask": [B]}``; ``mask`` (optional) is 0 on padding rows.

The white-box step draws no random numbers, so the state holds no RNG key: a
run's only randomness is the shuffle order, a pure function of (seed, epoch),
and the input pipeline's position is checkpointed beside the state.
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dfm import losses
from dfm.transform import perturb

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
Batch = dict[str, jax.Array]
DftState = dict[str, Any]
Metrics = dict[str, jax.Array]
UpdateStep = Callable[[DftState, PyTree, Batch], tuple[DftState, Metrics]]


def init_state(noise_shape: tuple[int, ...], optimizer: optax.GradientTransformation) -> DftState:
  """Returns the initial DFT state: zero noise (``Z = X`` under ``tanh``), step 0.

  Example::

    state = init_state((28, 28, 1), optax.adam(1e-2))
    state["noise"].shape  # (28, 28, 1)
  """
  noise = jnp.zeros(noise_shape, jnp.float32)
  return {"noise": noise, "opt": optimizer.init(noise), "step": jnp.zeros((), jnp.int32)}


def make_loss_fn(
    apply_fn: ApplyFn, *, lam: float, kind: str = "tanh", class_term: str = "hinge"
) -> Callable[[PyTree, PyTree, Batch], tuple[jax.Array, Metrics]]:
  """Returns ``loss_fn(noise, params, batch) -> (loss, metrics)`` of Eq. 11-12.

  ``loss = class_term(apply_fn(params, Z), y) + lam * mean_k ||X_k - Z_k||_F^2``
  with ``Z = perturb(X, noise, kind=kind)``; ``metrics`` also hold the two terms
  and the accuracy on ``Z``.

  Example::

    loss_fn = make_loss_fn(lambda params, x: x.reshape(len(x), -1) @ params, lam=0.01)
    loss, metrics = loss_fn(jnp.zeros((2, 2, 1)), jnp.ones((4, 3)),
                            {"image": jnp.full((5, 2, 2, 1), 0.5), "label": jnp.zeros(5, int)})
  """

  def loss_fn(noise: PyTree, params: PyTree, batch: Batch) -> tuple[jax.Array, Metrics]:
    images, labels, mask = batch["image"], batch["label"], batch.get("mask")
    perturbed = perturb(images, noise, kind=kind)
    logits = apply_fn(params, perturbed)
    loss, terms = losses.dft_objective(
        logits=logits, labels=labels, images=images, perturbed=perturbed,
        lam=lam, class_term=class_term, weights=mask)
    accuracy = losses.accuracy(logits=logits, labels=labels, weights=mask)
    return loss, {"loss": loss, **terms, "accuracy": accuracy}

  return loss_fn


def _average_over_devices(tree: PyTree, batch: Batch, axis_name: str) -> PyTree:
  """Averages per-device means into the mean over the whole (global) batch.

  Each device's mean is weighted by its count of real (unmasked) examples, so the
  result equals the single-device weighted mean exactly (up to float rounding).
  """
  mask = batch.get("mask")
  count = jnp.sum(mask) if mask is not None else jnp.float32(batch["label"].shape[0])
  total = jnp.maximum(jax.lax.psum(count, axis_name), 1.0)
  return jax.tree.map(lambda leaf: jax.lax.psum(leaf * count, axis_name) / total, tree)


def make_update_step(
    apply_fn: ApplyFn,
    optimizer: optax.GradientTransformation,
    *,
    lam: float,
    kind: str = "tanh",
    class_term: str = "hinge",
    axis_name: str | None = None,
) -> UpdateStep:
  """Returns the pure DFT update ``step(state, params, batch) -> (state, metrics)``.

  ``g = d loss / d noise`` (autodiff through the frozen ``apply_fn``; ``params``
  get no gradient), then ``noise <- noise + optax_update(g)``. With ``axis_name``
  (inside ``pmap``) gradients and metrics are averaged across devices first.
  Metrics: ``loss``, ``class_term``, ``appearance``, ``accuracy`` (on perturbed
  images), ``grad_norm``, ``noise_l2``, ``noise_linf``.

  Example::

    step = jax.jit(make_update_step(apply_fn, optax.adam(1e-2), lam=0.01))
    state = init_state((28, 28, 1), optax.adam(1e-2))
    state, metrics = step(state, params, {"image": x, "label": y})
  """
  loss_fn = make_loss_fn(apply_fn, lam=lam, kind=kind, class_term=class_term)
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def update_step(state: DftState, params: PyTree, batch: Batch) -> tuple[DftState, Metrics]:
    grads, metrics = grad_fn(state["noise"], params, batch)
    if axis_name is not None:
      grads, metrics = _average_over_devices((grads, metrics), batch, axis_name)
    updates, opt = optimizer.update(grads, state["opt"], state["noise"])
    noise = optax.apply_updates(state["noise"], updates)
    metrics = {
        **metrics,
        "grad_norm": optax.tree.norm(grads),
        "noise_l2": optax.tree.norm(noise),
        "noise_linf": jnp.max(jnp.abs(noise)),
    }
    return {"noise": noise, "opt": opt, "step": state["step"] + 1}, metrics

  return update_step
