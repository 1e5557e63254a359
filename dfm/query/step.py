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
The same optax tail as the white-box step (:func:`dfm.dft.apply_noise_update`)
then moves the noise.

The state is a :class:`dfm.types.QueryState`: the white-box state plus an RNG
``key`` (a step's directions come from ``fold_in(key, step)``, so a resumed run
draws the same ones), the ledger ``queries`` and the selected ``best``. The step
adds what it spent to the ledger it returns; an exception leaving the step
carries the run's ledger up to the failure as ``error.ledger`` (see
:func:`with_ledger`), so nothing sent is ever uncounted.

Example::

  step = make_query_step(model, optax.adam(0.1), lam=0.01, estimator="nes",
                         num_directions=10, scale=0.05)
  state = init_query_state(jnp.zeros((7, 7, 1)), optax.adam(0.1), seed=0)
  state, metrics = step(state, {"image": x, "label": y})
"""
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dfm import estimators, losses
from dfm.black_box.base import (BlackBox, Spent, add_spent, known_true_class_probability,
                                ledger_arrays, spent_of)
from dfm.dft import apply_noise_update, init_state, make_loss_fn
from dfm.transform import Transform, get_transform, perturb
from dfm.types import ApplyFn, Batch, Ledger, Metrics, PyTree, QueryState

QueryStep = Callable[[QueryState, Batch], tuple[QueryState, Metrics]]
# ``grad_fn(noise, images, labels) -> d class_term / d noise``, for diagnostics only.
TrueGradient = Callable[[PyTree, jax.Array, jax.Array], PyTree]


def with_ledger(error: BaseException, ledger: Ledger, spent: Spent) -> BaseException:
  """``error`` marked with the run's ledger up to it: ``ledger + spent``, where
  ``spent`` is what the failing work sent before the error (and the error's own).

  Example::

    raise with_ledger(error, state["queries"], spent_of(error)) from None
  """
  error.ledger = add_spent(ledger, spent)  # type: ignore[attr-defined]
  return error


def init_query_state(noise: PyTree, optimizer: optax.GradientTransformation, *,
                     seed: int) -> QueryState:
  """:func:`dfm.dft.init_state` from ``noise`` plus the RNG ``key`` data, a zero
  ledger and ``best``: no noise (``N = 0``), not yet scored (accuracy -1).

  Example::

    state = init_query_state(jnp.zeros((7, 7, 1)), optax.adam(0.1), seed=0)
    state["queries"]["images"]  # array(0)
  """
  return {**init_state(noise, optimizer),
          "key": jax.random.key_data(jax.random.key(seed)),
          "queries": ledger_arrays(Spent()),
          "best": {"noise": jax.tree.map(jnp.zeros_like, noise),
                   "val_accuracy": np.asarray(-1.0, np.float32),
                   "batch": np.zeros((), np.int64), "images": np.zeros((), np.int64)}}


def make_true_gradient(apply_fn: ApplyFn, params: PyTree, *, transform: str | Transform,
                       class_term: str | losses.ClassTerm) -> TrueGradient:
  """The white-box ``d class_term / d noise`` of a JAX model: the ``cosine`` diagnostic
  compares estimates with it; it never updates the noise."""
  loss_fn = make_loss_fn(apply_fn, lam=0.0, transform=transform, class_term=class_term)
  return jax.jit(lambda noise, images, labels: jax.grad(
      lambda n: loss_fn(n, params, {"image": images, "label": labels})[0])(noise))


def probe_images(images: jax.Array, noise: PyTree, key: jax.Array, *, estimator: str,
                 num_directions: int, scale: float, share_directions: bool,
                 transform: Transform) -> tuple[jax.Array, PyTree]:
  """``(probes [2q * B, H, W, C], directions)``: each image under each probe noise.

  Directions are leaves ``[q, *leaf]`` when shared, ``[q, B, *leaf]`` when each
  image has its own. Probe ``j * B + b`` is image ``b`` under probe noise ``j``
  (the ``q`` plus noises, then the ``q`` minus noises).
  """
  batch = () if share_directions else (images.shape[0],)
  directions = estimators.sample_directions(key, estimator, noise, num_directions, batch=batch)
  noises = estimators.probe_noises(noise, directions, scale)  # leaves [2q, (B,) *leaf]
  if share_directions:
    probes = jax.vmap(lambda n: perturb(images, n, transform=transform))(noises)
  else:
    probes = jax.vmap(jax.vmap(lambda x, n: perturb(x[None], n, transform=transform)[0]))(
        jnp.broadcast_to(images, (2 * num_directions, *images.shape)), noises)
  return probes.reshape(-1, *images.shape[1:]), directions


def class_gradient(probabilities: jax.Array, labels: jax.Array, directions: PyTree, *,
                   scale: float, class_term: str | losses.ClassTerm,
                   share_directions: bool) -> tuple[PyTree, jax.Array]:
  """``(estimate of grad C, per-probe class terms [2q, B])`` from the probes' scores."""
  num_probes = 2 * jax.tree.leaves(directions)[0].shape[0]
  true_prob = known_true_class_probability(probabilities, jnp.tile(labels, num_probes))
  values = losses.class_term_per_image(true_prob=true_prob, class_term=class_term)
  values = values.reshape(num_probes, -1)  # [2q, B]
  if share_directions:
    return estimators.combine(values.mean(axis=1), directions, scale), values
  # Each image's estimate uses its own directions; the batch's is their mean.
  per_image = jax.vmap(lambda v, d: estimators.combine(v, d, scale), in_axes=(1, 1))(
      values, directions)
  return jax.tree.map(lambda g: g.mean(axis=0), per_image), values


def appearance_gradient(noise: PyTree, images: jax.Array, *, lam: float,
                        transform: Transform) -> tuple[PyTree, jax.Array]:
  """``(lam * grad A, A)``, exact: the appearance term needs no model."""
  def appearance(noise):
    perturbed = perturb(images, noise, transform=transform)
    return losses.appearance_distance(images=images, perturbed=perturbed)
  value, grad = jax.value_and_grad(appearance)(noise)
  return jax.tree.map(lambda g: lam * g, grad), value


def _cosine(a: PyTree, b: PyTree) -> jax.Array:
  dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  return dot / jnp.maximum(optax.tree.norm(a) * optax.tree.norm(b), 1e-30)


def check_images_per_step(images_per_step: int, num_directions: int) -> None:
  """``images_per_step`` is 0 (no cap) or pays for one image under ``2q`` probes.

  Raises:
    ValueError: naming ``config.query.images_per_step`` and the fix.
  """
  if images_per_step < 0 or 0 < images_per_step < 2 * num_directions:
    raise ValueError(f"config.query.images_per_step={images_per_step} must be 0 (no cap) or "
                     f"at least 2 x directions = {2 * num_directions}: raise it or lower "
                     "config.query.directions.")


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
                    estimator: str, num_directions: int, scale: float,
                    transform: str | Transform = "tanh",
                    class_term: str | losses.ClassTerm = "hinge", share_directions: bool = True,
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
  ``noise_linf``, ``probed_share``, and the ledger after the step
  ``queries_calls``, ``queries_images``, ``queries_failures``.
  """
  check_images_per_step(images_per_step, num_directions)
  transform, class_term = get_transform(transform), losses.get_class_term(class_term)
  perturb_jit = jax.jit(functools.partial(perturb, transform=transform))
  probe = jax.jit(functools.partial(
      probe_images, estimator=estimator, num_directions=num_directions, scale=scale,
      share_directions=share_directions, transform=transform))

  @jax.jit
  def finish(state, images, labels, probabilities, directions, share):
    """The update from the probes' scores; ``state`` is ``{"noise", "opt", "step"}``;
    ``share`` is the fraction of the batch probed (the rest count as settled)."""
    class_grad, values = class_gradient(probabilities, labels, directions, scale=scale,
                                        class_term=class_term, share_directions=share_directions)
    class_grad = jax.tree.map(lambda g: share * g, class_grad)
    app_grad, appearance = appearance_gradient(state["noise"], images, lam=lam,
                                               transform=transform)
    grads = jax.tree.map(lambda c, a, n: (c + a).astype(n.dtype), class_grad, app_grad,
                         state["noise"])
    state, norms = apply_noise_update(state, grads, optimizer)
    correct = jnp.argmax(jnp.nan_to_num(probabilities, nan=-1.0), -1) == jnp.tile(
        labels, 2 * num_directions)
    metrics = {"loss": values.mean() + lam * appearance, "class_term": values.mean(),
               "appearance": appearance, "accuracy": correct.mean(), **norms}
    return state, metrics, class_grad

  def unsettled(noise, images, labels) -> tuple[np.ndarray, np.ndarray, float, Spent]:
    """The images whose true class still scores below ``focus`` (at least one)."""
    reply = model.score(np.asarray(perturb_jit(images, noise)))
    true_prob = np.asarray(known_true_class_probability(reply.probabilities, labels))
    keep = true_prob < focus
    keep[np.argmin(true_prob)] = True
    return images[keep], labels[keep], keep.mean(), reply.spent

  def step(state: QueryState, batch: Batch) -> tuple[QueryState, Metrics]:
    images, labels = _rows_to_send(batch, images_per_batch(
        len(batch["label"]), num_directions, images_per_step))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    spent, share = Spent(), 1.0
    try:
      if focus:
        images, labels, share, spent = unsettled(state["noise"], images, labels)
      probes, directions = probe(images, state["noise"], key)
      reply = model.score(np.asarray(probes))
      spent = spent + reply.spent
      noise_state = {"noise": state["noise"], "opt": state["opt"], "step": state["step"]}
      updated, metrics, class_grad = finish(noise_state, images, labels, reply.probabilities,
                                            directions, np.float32(share))
      if true_gradient is not None:
        metrics["cosine"] = _cosine(class_grad, true_gradient(state["noise"], images, labels))
    except BaseException as error:  # Ctrl-C included: what was sent stays counted.
      raise with_ledger(error, state["queries"], spent + spent_of(error))
    queries = add_spent(state["queries"], spent)
    metrics["probed_share"] = share
    metrics.update({f"queries_{name}": value for name, value in queries.items()})
    return {**state, **updated, "queries": queries}, metrics

  return step

