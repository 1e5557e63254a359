"""Query-only DFT: the noise update when the classifier can only be scored.

The loss is the white-box one (Eq. 11-12), ``L(N) = C(N) + lam * A(N)``, but the
class term ``C`` is seen only through a :class:`dfm.black_box.BlackBox`:

- ``grad C`` is estimated (:mod:`dfm.estimators`, SPSA or antithetic NES) from the
  scores of the batch under ``2q`` probe noises ``N +- c d_i``, all sent to the
  model as ONE stacked batch of ``2q * B`` images;
- ``grad A`` needs no model, so it stays exact (autodiff through ``perturb``).

With ``share_directions`` every image is probed along the same ``q`` directions
(``C`` averaged over the batch, then one estimate); otherwise each image gets ``q``
directions of its own and the ``B`` estimates are averaged. Either way a step costs
``2 q B`` images. ``images_per_step`` caps that cost by using fewer batch images.
The same optax update as the white-box step then moves the noise.

The state adds to the white-box one an RNG ``key`` (a step's directions come from
``fold_in(key, step)``, so a resumed run draws the same ones) and ``queries``,
the ledger of :data:`dfm.black_box.COUNTS` kept in every checkpoint.

Example::

  step = make_query_step(model, optax.adam(0.1), lam=0.01, estimator="nes",
                         num_directions=10, scale=0.05)
  state = init_query_state((7, 7, 1), optax.adam(0.1), seed=0)
  state, metrics = step(state, {"image": x, "label": y})
"""
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dfm import estimators, losses
from dfm.black_box import (COUNTS, BlackBox, known_true_class_probability, ledger_arrays,
                           ledger_ints)
from dfm.dft import Batch, DftState, Metrics, init_state
from dfm.transform import perturb

QueryStep = Callable[[DftState, Batch], tuple[DftState, Metrics]]
# ``grad_fn(noise, images, labels) -> d class_term / d noise``, for diagnostics only.
TrueGradient = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def init_query_state(noise_shape: tuple[int, ...], optimizer: optax.GradientTransformation, *,
                     seed: int) -> DftState:
  """:func:`dfm.dft.init_state` plus the RNG ``key`` data and a zero query ledger."""
  return {**init_state(noise_shape, optimizer),
          "key": jax.random.key_data(jax.random.key(seed)),
          "queries": ledger_arrays(dict.fromkeys(COUNTS, 0))}


def probe_images(images: jax.Array, noise: jax.Array, key: jax.Array, *, estimator: str,
                 num_directions: int, scale: float, share_directions: bool,
                 kind: str) -> tuple[jax.Array, jax.Array]:
  """``(probes [2q * B, H, W, C], directions)``: each image under each probe noise.

  Directions are ``[q, *noise.shape]`` when shared, ``[q, B, *noise.shape]`` when
  each image has its own. Probe ``j * B + b`` is image ``b`` under probe noise ``j``
  (the ``q`` plus noises, then the ``q`` minus noises).
  """
  batch = images.shape[0]
  shape = noise.shape if share_directions else (batch, *noise.shape)
  directions = estimators.sample_directions(key, estimator, shape, num_directions)
  noises = estimators.probe_noises(noise, directions, scale)  # [2q, (B,) *noise.shape]
  if share_directions:
    probes = jax.vmap(lambda n: perturb(images, n, kind=kind))(noises)
  else:
    probes = jax.vmap(jax.vmap(lambda x, n: perturb(x[None], n, kind=kind)[0]))(
        jnp.broadcast_to(images, (2 * num_directions, *images.shape)), noises)
  return probes.reshape(-1, *images.shape[1:]), directions


def class_gradient(probabilities: jax.Array, labels: jax.Array, directions: jax.Array, *,
                   scale: float, class_term: str,
                   share_directions: bool) -> tuple[jax.Array, jax.Array]:
  """``(estimate of grad C, per-probe class terms [2q, B])`` from the probes' scores."""
  num_probes = 2 * directions.shape[0]
  tiled = jnp.tile(labels, num_probes)
  true_prob = known_true_class_probability(probabilities, tiled)
  values = losses.class_term_per_image(true_prob=true_prob, class_term=class_term)
  values = values.reshape(num_probes, -1)  # [2q, B]
  if share_directions:
    return estimators.combine(values.mean(axis=1), directions, scale), values
  # Each image's estimate uses its own directions; the batch's is their mean.
  per_image = jax.vmap(lambda v, d: estimators.combine(v, d, scale), in_axes=(1, 1))(
      values, directions)
  return per_image.mean(axis=0), values


def appearance_gradient(noise: jax.Array, images: jax.Array, *, lam: float,
                        kind: str) -> tuple[jax.Array, jax.Array]:
  """``(lam * grad A, A)``, exact: the appearance term needs no model."""
  def appearance(noise):
    return losses.appearance_distance(images=images, perturbed=perturb(images, noise, kind=kind))
  value, grad = jax.value_and_grad(appearance)(noise)
  return lam * grad, value


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.vdot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)


def images_per_batch(batch_size: int, num_directions: int, images_per_step: int) -> int:
  """Batch images a step probes: all, or ``images_per_step // 2q`` if that is fewer."""
  if images_per_step:
    return min(batch_size, images_per_step // (2 * num_directions))
  return batch_size


def _rows_to_send(batch: Batch, limit: int) -> tuple[np.ndarray, np.ndarray]:
  """The batch's real (unmasked) images and labels, at most ``limit`` of them."""
  images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
  if "mask" in batch:
    keep = np.asarray(batch["mask"]) > 0
    images, labels = images[keep], labels[keep]
  return images[:limit], labels[:limit]


def make_query_step(model: BlackBox, optimizer: optax.GradientTransformation, *, lam: float,
                    estimator: str, num_directions: int, scale: float, kind: str = "tanh",
                    class_term: str = "hinge", share_directions: bool = True,
                    images_per_step: int = 0, focus: float = 0.0,
                    true_gradient: TrueGradient | None = None) -> QueryStep:
  """Returns the host step ``step(state, batch) -> (state, metrics)`` of query-only DFT.

  One call of ``model`` per step, on ``2q * B`` probes; ``B`` is the batch's real
  images, capped to ``images_per_step // 2q`` if ``images_per_step`` is set. The
  model is only called, on host arrays: nothing differentiates through it.
  ``focus`` (0: off) first scores the batch under the current noise (``B`` more
  images, a second call) and probes only the images whose true class scores below
  ``focus``; settled images add almost nothing to the hinge's gradient but would
  cost ``2q`` queries each. The estimate is scaled by the share probed.
  ``true_gradient`` (a white-box ``d C / d noise``) adds the diagnostic metric
  ``cosine``, the cosine between the estimate and the true gradient of ``C``.

  Metrics: ``loss``, ``class_term`` (mean over the probes), ``appearance``,
  ``accuracy`` (top-1 over the probes), ``grad_norm``, ``noise_l2``,
  ``noise_linf``, ``probed_share``, and the ledger ``queries_calls``,
  ``queries_images``, ``queries_failures``.
  """
  if images_per_step and images_per_step < 2 * num_directions:
    raise ValueError(f"config.query.images_per_step={images_per_step} cannot pay for one "
                     f"image under {2 * num_directions} probes: raise it or lower "
                     "config.query.directions.")
  perturb_jit = jax.jit(perturb, static_argnames="kind")
  probe = jax.jit(functools.partial(
      probe_images, estimator=estimator, num_directions=num_directions, scale=scale,
      share_directions=share_directions, kind=kind))

  @jax.jit
  def finish(state, images, labels, probabilities, directions, share):
    """The update from the probes' scores; ``state`` is ``{"noise", "opt", "step"}``;
    ``share`` is the fraction of the batch probed (the rest count as settled)."""
    class_grad, values = class_gradient(probabilities, labels, directions, scale=scale,
                                        class_term=class_term, share_directions=share_directions)
    class_grad = share * class_grad
    app_grad, appearance = appearance_gradient(state["noise"], images, lam=lam, kind=kind)
    grads = class_grad + app_grad
    updates, opt = optimizer.update(grads, state["opt"], state["noise"])
    noise = optax.apply_updates(state["noise"], updates)
    correct = jnp.argmax(jnp.nan_to_num(probabilities, nan=-1.0), -1) == jnp.tile(
        labels, 2 * num_directions)
    metrics = {"loss": values.mean() + lam * appearance, "class_term": values.mean(),
               "appearance": appearance, "accuracy": correct.mean(),
               "grad_norm": optax.tree.norm(grads), "noise_l2": optax.tree.norm(noise),
               "noise_linf": jnp.max(jnp.abs(noise))}
    return {"noise": noise, "opt": opt, "step": state["step"] + 1}, metrics, class_grad

  def unsettled(state, images, labels):
    """The images whose true class still scores below ``focus`` (at least one)."""
    scores = model(np.asarray(perturb_jit(images, state["noise"], kind=kind)))
    true_prob = np.asarray(known_true_class_probability(scores, labels))
    keep = true_prob < focus
    keep[np.argmin(true_prob)] = True
    return images[keep], labels[keep], keep.mean()

  def step(state: DftState, batch: Batch) -> tuple[DftState, Metrics]:
    images, labels = _rows_to_send(batch, images_per_batch(
        len(batch["label"]), num_directions, images_per_step))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    model.counts = ledger_ints(state["queries"])
    share = 1.0
    if focus:
      images, labels, share = unsettled(state, images, labels)
    probes, directions = probe(images, state["noise"], key)
    probabilities = model(np.asarray(probes))
    queries = ledger_arrays(model.counts)
    updated, metrics, class_grad = finish({k: state[k] for k in ("noise", "opt", "step")},
                                          images, labels, probabilities, directions,
                                          np.float32(share))
    metrics["probed_share"] = share
    if true_gradient is not None:
      metrics["cosine"] = _cosine(class_grad, true_gradient(state["noise"], images, labels))
    metrics.update({f"queries_{name}": value for name, value in queries.items()})
    return {**state, **updated, "queries": queries}, metrics

  return step
