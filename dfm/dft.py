"""The DFT state and its update step: gradient descent on the noise, model frozen.

The state is a plain dict :class:`dfm.types.NoiseState` ``{"noise", "opt",
"step"}``; the noise is any pytree of float arrays (see :mod:`dfm.transform`). The
frozen classifier enters only as ``apply_fn(params, images) -> logits`` and its
``params`` are an argument of every step: never updated, never captured as
constants, never seen by the optimizer. Batches are :class:`dfm.types.Batch`.

The white-box step draws no random numbers, so the state holds no RNG key: a
run's only randomness is the shuffle order, a pure function of (seed, epoch),
and the input pipeline's position is checkpointed beside the state.

K settings (lam, lr) train at once with :func:`make_stacked_update_step`: the
state stacked on a leading axis of size K (:func:`init_stacked_state`), the step
``jax.vmap``-ped over it, every setting fed the same batch.
"""
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from dfm import losses
from dfm.transform import Transform, get_transform, perturb
from dfm.types import ApplyFn, Batch, Metrics, NoiseState, PyTree, UpdateStep


def init_state(noise: PyTree, optimizer: optax.GradientTransformation) -> NoiseState:
  """The DFT state that starts from ``noise`` (any pytree of float arrays), step 0.

  The optimizer is initialised on ``noise`` itself, so optimizers whose state
  depends on the values start right. Zero noise is ``Z = X`` under ``tanh``.

  Example::

    state = init_state(jnp.zeros((28, 28, 1)), optax.adam(1e-2))
    state = init_state({"coarse": jnp.zeros((7, 7, 1)), "fine": jnp.zeros((28, 28, 1))},
                       optax.adam(1e-2))

  Raises:
    TypeError: a noise leaf that is not a float array (e.g. a shape tuple).
  """
  check_noise(noise)
  return {"noise": noise, "opt": optimizer.init(noise), "step": jnp.zeros((), jnp.int32)}


def check_noise(noise: PyTree) -> None:
  """Raises a TypeError unless ``noise`` is a pytree of float arrays (at least one)."""
  leaves = jax.tree.leaves(noise)
  if not leaves or not all(hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
                           for leaf in leaves):
    raise TypeError(f"The noise must be a pytree of float arrays, got {noise!r:.80}: pass "
                    "the noise itself, e.g. init_state(jnp.zeros((28, 28, 1)), optimizer).")


def noise_norms(noise: PyTree) -> Metrics:
  """``{"noise_l2": ||N||_2, "noise_linf": max |N|}`` over every leaf of the noise."""
  return {"noise_l2": optax.tree.norm(noise),
          "noise_linf": jnp.max(jnp.stack([jnp.max(jnp.abs(leaf))
                                           for leaf in jax.tree.leaves(noise)]))}


def apply_noise_update(state: NoiseState, grads: PyTree,
                       optimizer: optax.GradientTransformation) -> tuple[NoiseState, Metrics]:
  """``noise <- noise + optax_update(grads)``: the tail of every DFT step.

  Shared by the white-box step (autodiff gradients) and the query-only one
  (estimated gradients). Returns the next ``{"noise", "opt", "step"}`` and the
  metrics ``grad_norm``, ``noise_l2``, ``noise_linf``.

  Example::

    state, norms = apply_noise_update(state, jnp.ones((28, 28, 1)), optax.sgd(0.1))
  """
  updates, opt = optimizer.update(grads, state["opt"], state["noise"])
  noise = optax.apply_updates(state["noise"], updates)
  metrics = {"grad_norm": optax.tree.norm(grads), **noise_norms(noise)}
  return {"noise": noise, "opt": opt, "step": state["step"] + 1}, metrics


def make_loss_fn(
    apply_fn: ApplyFn, *, lam: float, transform: str | Transform = "tanh",
    class_term: str | losses.ClassTerm = "hinge",
) -> Callable[[PyTree, PyTree, Batch], tuple[jax.Array, Metrics]]:
  """Returns ``loss_fn(noise, params, batch) -> (loss, metrics)`` of Eq. 11-12.

  ``loss = mean_k class_term(apply_fn(params, Z), y)_k + lam * mean_k ||X_k - Z_k||_F^2``
  with ``Z = perturb(X, noise, transform=transform)``; ``metrics`` also hold the
  two terms and the accuracy on ``Z``. ``transform`` and ``class_term`` are names
  or functions, resolved here once.

  Example::

    loss_fn = make_loss_fn(lambda params, x: x.reshape(len(x), -1) @ params, lam=0.01)
    loss, metrics = loss_fn(jnp.zeros((2, 2, 1)), jnp.ones((4, 3)),
                            {"image": jnp.full((5, 2, 2, 1), 0.5), "label": jnp.zeros(5, int)})
  """
  perturb_fn = functools.partial(perturb, transform=get_transform(transform))
  term = losses.get_class_term(class_term)

  def loss_fn(noise: PyTree, params: PyTree, batch: Batch) -> tuple[jax.Array, Metrics]:
    images, labels, mask = batch["image"], batch["label"], batch.get("mask")
    perturbed = perturb_fn(images, noise)
    logits = apply_fn(params, perturbed)
    loss, terms = losses.dft_objective(
        logits=logits, labels=labels, images=images, perturbed=perturbed,
        lam=lam, class_term=term, weights=mask)
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
    transform: str | Transform = "tanh",
    class_term: str | losses.ClassTerm = "hinge",
    axis_name: str | None = None,
) -> UpdateStep:
  """Returns the pure DFT update ``step(state, params, batch) -> (state, metrics)``.

  ``g = d loss / d noise`` (autodiff through the frozen ``apply_fn``; ``params``
  get no gradient), then :func:`apply_noise_update`. With ``axis_name`` (inside
  ``pmap``) gradients and metrics are averaged across devices first.
  Metrics: ``loss``, ``class_term``, ``appearance``, ``accuracy`` (on perturbed
  images), ``grad_norm``, ``noise_l2``, ``noise_linf``.

  Example::

    step = jax.jit(make_update_step(apply_fn, optax.adam(1e-2), lam=0.01))
    state = init_state(jnp.zeros((28, 28, 1)), optax.adam(1e-2))
    state, metrics = step(state, params, {"image": x, "label": y})
  """
  loss_fn = make_loss_fn(apply_fn, lam=lam, transform=transform, class_term=class_term)
  grad_fn = jax.grad(loss_fn, has_aux=True)

  def update_step(state: NoiseState, params: PyTree, batch: Batch) -> tuple[NoiseState, Metrics]:
    grads, metrics = grad_fn(state["noise"], params, batch)
    if axis_name is not None:
      grads, metrics = _average_over_devices((grads, metrics), batch, axis_name)
    state, norms = apply_noise_update(state, grads, optimizer)
    return state, {**metrics, **norms}

  return update_step


OptimizerOf = Callable[[jax.Array], optax.GradientTransformation]


def init_stacked_state(noise: PyTree, optimizer_of: OptimizerOf, lrs: jax.Array) -> NoiseState:
  """K DFT states stacked on a leading axis, one per learning rate of ``lrs`` (shape [K]).

  Setting ``k`` is :func:`init_state` of ``noise`` (the same start for all K) with
  ``optimizer_of(lrs[k])``; every leaf of the result gets a leading axis of size K.

  Example::

    state = init_stacked_state(jnp.zeros((28, 28, 1)), optax.adam, jnp.array([1e-2, 3e-2]))
    state["noise"].shape  # (2, 28, 28, 1)
  """
  return jax.vmap(lambda lr: init_state(noise, optimizer_of(lr)))(
      jnp.asarray(lrs, jnp.float32))


def make_stacked_update_step(
    apply_fn: ApplyFn,
    optimizer_of: OptimizerOf,
    *,
    lams: jax.Array,
    lrs: jax.Array,
    transform: str | Transform = "tanh",
    class_term: str | losses.ClassTerm = "hinge",
    axis_name: str | None = None,
) -> UpdateStep:
  """K settings' DFT steps as one: ``step(states, params, batch) -> (states, metrics)``.

  Setting ``k`` is ``make_update_step(apply_fn, optimizer_of(lrs[k]), lam=lams[k])``
  on its own slice of the stacked state (:func:`init_stacked_state`); ``jax.vmap``
  runs the K of them on the SAME batch and frozen ``params`` (not mapped), so one
  pass of the data trains K noises. Each metric of :func:`make_update_step` comes
  back with shape [K]. ``lams`` and ``lrs`` are [K] arrays, mapped with the state.

  Example::

    lams, lrs = jnp.array([0.01, 0.1]), jnp.array([1e-2, 1e-2])
    step = jax.jit(make_stacked_update_step(apply_fn, optax.adam, lams=lams, lrs=lrs))
    state, metrics = step(init_stacked_state(jnp.zeros((28, 28, 1)), optax.adam, lrs),
                          params, batch)
    metrics["loss"].shape  # (2,)

  Raises:
    ValueError: ``lams`` and ``lrs`` are not two [K] arrays of one K.
  """
  lams, lrs = jnp.asarray(lams, jnp.float32), jnp.asarray(lrs, jnp.float32)
  if lams.ndim != 1 or lams.shape != lrs.shape:
    raise ValueError(f"lams {lams.shape} and lrs {lrs.shape} must be two [K] arrays of one "
                     "K: one lam and one lr per setting.")

  def one_setting(state: NoiseState, lam: jax.Array, lr: jax.Array, params: PyTree,
                  batch: Batch) -> tuple[NoiseState, Metrics]:
    step = make_update_step(apply_fn, optimizer_of(lr), lam=lam, transform=transform,
                            class_term=class_term, axis_name=axis_name)
    return step(state, params, batch)

  def stacked_step(state: NoiseState, params: PyTree, batch: Batch) -> tuple[NoiseState, Metrics]:
    return jax.vmap(one_setting, in_axes=(0, 0, 0, None, None))(state, lams, lrs, params, batch)

  return stacked_step


def perturb_with_distance(images: jax.Array, noise: PyTree, *,
                          transform: str | Transform = "tanh") -> tuple[jax.Array, jax.Array]:
  """``(Z, ||X_k - Z_k||_F^2 per image)`` of ``Z = perturb(X, noise)``: what every
  evaluation of a noise needs (the model's input and the appearance cost).

  Example::

    perturbed, distance = perturb_with_distance(x, jnp.zeros((28, 28, 1)))  # distance 0
  """
  perturbed = perturb(images, noise, transform=transform)
  return perturbed, losses.squared_distance_per_image(images=images, perturbed=perturbed)
