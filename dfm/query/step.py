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
``2 q B`` images (``2 (q + 1) B`` with a direction prior). ``images_per_step`` caps
that cost by using fewer batch images. The same optax tail as the white-box step
(:func:`dfm.dft.apply_noise_update`) then moves the noise.

Priors that buy more from the same queries (:class:`EstimateOptions`):

- data: ``frequencies=K`` draws the directions in the ``K x K`` lowest DCT
  frequencies (:mod:`dfm.estimators`);
- direction: ``prior="previous"`` (the last estimate, a time prior) or
  ``"surrogate"`` (``prior_gradient``, e.g. a white-box model's ``d C / d noise``)
  steers the estimate with P-RGF's weight, estimated from the queries;
- time: ``lookahead=beta`` probes at ``N + beta v`` with ``v`` the last move per
  update (``N_t - N_{t-1}`` with one update per estimate), the Nesterov-style
  look-ahead of SPSA-GC (Oh et al. 2023), and
  ``updates_per_estimate=k`` moves the noise ``k`` times per estimate (the exact
  appearance gradient recomputed each time), a step costing ``1/k`` as much.

The state is a :class:`dfm.types.QueryState`: the white-box state plus an RNG
``key`` (a step's directions come from ``fold_in(key, step)``, so a resumed run
draws the same ones), the ledger ``queries`` and the selected ``best``. The step
adds what it spent to the ledger it returns; an exception leaving the step
carries the run's ledger up to the failure as ``error.ledger`` (see
:func:`with_ledger`), so nothing sent is ever uncounted.

Example::

  step = make_query_step(model, optax.adam(0.1), lam=0.01,
                         options=EstimateOptions("nes", num_directions=10, scale=0.05))
  state = init_query_state(jnp.zeros((7, 7, 1)), optax.adam(0.1), seed=0, validation_size=20)
  state, metrics = step(state, {"image": x, "label": y})
"""
import dataclasses
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
from dfm.optim import set_learning_rate
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
                     seed: int, validation_size: int) -> QueryState:
  """:func:`dfm.dft.init_state` from ``noise`` plus the RNG ``key`` data, the last
  ``estimate`` and noise ``velocity`` (zeros), a zero ledger and ``best``: no noise
  (``N = 0``), not yet scored (accuracy -1, none of the ``validation_size`` images
  counted correct).

  Example::

    state = init_query_state(jnp.zeros((7, 7, 1)), optax.adam(0.1), seed=0,
                             validation_size=20)
    state["queries"]["images"]  # array(0)
  """
  return {**init_state(noise, optimizer),
          "key": jax.random.key_data(jax.random.key(seed)),
          "estimate": jax.tree.map(jnp.zeros_like, noise),
          "velocity": jax.tree.map(jnp.zeros_like, noise),
          "queries": ledger_arrays(Spent()),
          "best": {"noise": jax.tree.map(jnp.zeros_like, noise),
                   "val_accuracy": np.asarray(-1.0, np.float32),
                   "correct": np.zeros(validation_size, bool),
                   "zero_correct": np.zeros(validation_size, bool),
                   "batch": np.zeros((), np.int64), "images": np.zeros((), np.int64)}}


def make_true_gradient(apply_fn: ApplyFn, params: PyTree, *, transform: str | Transform,
                       class_term: str | losses.ClassTerm) -> TrueGradient:
  """The white-box ``d class_term / d noise`` of a JAX model: the ``cosine`` diagnostic
  compares estimates with it, and a surrogate model's is a direction prior."""
  loss_fn = make_loss_fn(apply_fn, lam=0.0, transform=transform, class_term=class_term)
  return jax.jit(lambda noise, images, labels: jax.grad(
      lambda n: loss_fn(n, params, {"image": images, "label": labels})[0])(noise))


@dataclasses.dataclass(frozen=True)
class EstimateOptions:
  """How a step estimates ``grad C`` (module docstring): ``estimator`` (spsa | nes),
  ``num_directions`` q, probe ``scale`` c, ``frequencies`` (0: pixels), ``prior``
  (none | previous | surrogate), ``lookahead`` beta and ``updates_per_estimate``."""

  estimator: str = "nes"
  num_directions: int = 10
  scale: float = 0.05
  share_directions: bool = True
  frequencies: int = 0
  prior: str = "none"
  lookahead: float = 0.0
  updates_per_estimate: int = 1

  @property
  def probes_per_image(self) -> int:
    """Probe noises an estimate scores each image under: ``2q`` (+2 with a prior);
    1 for a distilled student (:mod:`dfm.query.distill`: the batch under the noise)."""
    if self.estimator == DISTILL:
      return 1
    return 2 * self.num_directions + (2 if self.prior != "none" else 0)


PRIORS = ("none", "previous", "surrogate")
DISTILL = "distill"  # The estimator of dfm.query.distill: a student learns the replies.


def probe_images(images: jax.Array, center: PyTree, key: jax.Array, prior: PyTree | None, *,
                 options: EstimateOptions, transform: Transform) -> tuple[jax.Array, PyTree]:
  """``(probes [P * B, H, W, C], directions)``: each image under each probe noise.

  Directions are leaves ``[q, *leaf]`` when shared, ``[q, B, *leaf]`` when each
  image has its own; with a ``prior`` (shared only) the prior, scaled to the
  directions' length ``sqrt(D)``, is appended as direction ``q + 1`` and the others
  are made orthogonal to it (:func:`dfm.estimators.with_prior`). Probe ``j * B + b``
  is image ``b`` under probe noise ``j`` (the plus noises, then the minus ones).
  """
  batch = () if options.share_directions else (images.shape[0],)
  directions = estimators.sample_directions(key, options.estimator, center,
                                            options.num_directions, batch=batch,
                                            frequencies=options.frequencies)
  if prior is not None:
    directions = estimators.with_prior(directions, estimators.unit(prior),
                                       estimators.search_dimensions(center,
                                                                    options.frequencies))
  noises = estimators.probe_noises(center, directions, options.scale)  # [P, (B,) *leaf]
  if options.share_directions:
    probes = jax.vmap(lambda n: perturb(images, n, transform=transform))(noises)
  else:
    probes = jax.vmap(jax.vmap(lambda x, n: perturb(x[None], n, transform=transform)[0]))(
        jnp.broadcast_to(images, (2 * options.num_directions, *images.shape)), noises)
  return probes.reshape(-1, *images.shape[1:]), directions


def class_gradient(probabilities: jax.Array, labels: jax.Array, directions: PyTree, *,
                   options: EstimateOptions, dimensions: int,
                   class_term: losses.ClassTerm) -> tuple[PyTree, jax.Array, jax.Array]:
  """``(estimate of grad C, per-probe class terms [P, B], prior weight)`` from the
  probes' scores (the weight is 0 without a prior)."""
  num_probes = 2 * jax.tree.leaves(directions)[0].shape[0]
  true_prob = known_true_class_probability(probabilities, jnp.tile(labels, num_probes))
  values = losses.class_term_per_image(true_prob=true_prob, class_term=class_term)
  values = values.reshape(num_probes, -1)  # [P, B]
  if options.prior != "none":
    estimate, weight, _ = estimators.prior_guided_estimate(values.mean(axis=1), directions,
                                                           options.scale, dimensions)
    return estimate, values, weight
  if options.share_directions:
    return estimators.combine(values.mean(axis=1), directions, options.scale), values, 0.0
  # Each image's estimate uses its own directions; the batch's is their mean.
  per_image = jax.vmap(lambda v, d: estimators.combine(v, d, options.scale), in_axes=(1, 1))(
      values, directions)
  return jax.tree.map(lambda g: g.mean(axis=0), per_image), values, 0.0


def appearance_gradient(noise: PyTree, images: jax.Array, *, lam: float,
                        transform: Transform) -> tuple[PyTree, jax.Array]:
  """``(lam * grad A, A)``, exact: the appearance term needs no model."""
  def appearance(noise):
    perturbed = perturb(images, noise, transform=transform)
    return losses.appearance_distance(images=images, perturbed=perturbed)
  value, grad = jax.value_and_grad(appearance)(noise)
  return jax.tree.map(lambda g: lam * g, grad), value


def check_images_per_step(images_per_step: int, probes_per_image: int) -> None:
  """``images_per_step`` is 0 (no cap) or pays for one image under its probes.

  Raises:
    ValueError: naming ``config.query.images_per_step`` and the fix.
  """
  if images_per_step < 0 or 0 < images_per_step < probes_per_image:
    raise ValueError(f"config.query.images_per_step={images_per_step} must be 0 (no cap) or "
                     f"at least the {probes_per_image} probes of one image: raise it or "
                     "lower config.query.directions.")


def images_per_batch(batch_size: int, probes_per_image: int, images_per_step: int) -> int:
  """Batch images a step probes: all, or ``images_per_step // probes`` if that is fewer."""
  if images_per_step:
    return min(batch_size, images_per_step // probes_per_image)
  return batch_size


def rows_to_send(batch: Batch, limit: int) -> tuple[np.ndarray, np.ndarray]:
  """The batch's real (unmasked) images and labels, at most ``limit`` of them."""
  images, labels = np.asarray(batch["image"]), np.asarray(batch["label"])
  if "mask" in batch:
    keep = np.asarray(batch["mask"]) > 0
    images, labels = images[keep], labels[keep]
  return images[:limit], labels[:limit]


def on_the_clock(state: QueryState, learning_rate_at: Callable[[QueryState], float] | None
                 ) -> tuple[QueryState, Metrics]:
  """``(state, metrics)``: the state with its optimizer's learning rate set by the
  budget's clock ``learning_rate_at(state)`` and ``{"learning_rate": lr}``; as it
  is and ``{}`` without a clock."""
  if learning_rate_at is None:
    return state, {}
  rate = learning_rate_at(state)
  return {**state, "opt": set_learning_rate(state["opt"], rate)}, {"learning_rate": rate}


def make_update(optimizer: optax.GradientTransformation, *, lam: float, transform: Transform,
                updates: int) -> Callable:
  """``update(state, images, class_grad) -> (state, appearance, norms)``: ``updates``
  optax moves of the noise along ``class_grad + lam grad A`` (``A``'s gradient exact
  at each), and the state's ``velocity`` (the mean move per update since the last
  estimate, ``(N_t - N_{t-1}) / updates``) and ``estimate``."""
  def update(state, images, class_grad):
    start = state["noise"]
    for _ in range(updates):
      app_grad, appearance = appearance_gradient(state["noise"], images, lam=lam,
                                                 transform=transform)
      grads = jax.tree.map(lambda c, a, n: (c + a).astype(n.dtype), class_grad, app_grad,
                           state["noise"])
      moved, norms = apply_noise_update(state, grads, optimizer)
      state = {**state, **moved}
    velocity = jax.tree.map(lambda n, s: (n - s) / updates, state["noise"], start)
    return {**state, "velocity": velocity, "estimate": class_grad}, appearance, norms
  return update


def make_cosine_step(apply_fn: ApplyFn, params: PyTree, optimizer: optax.GradientTransformation,
                     *, lam: float, cosine: float, transform: str | Transform = "tanh",
                     class_term: str | losses.ClassTerm = "hinge") -> QueryStep:
  """``step(state, batch) -> (state, metrics)``: white-box DFT whose class gradient is
  degraded to the cosine ``cosine`` with the true one (:func:`dfm.estimators.at_cosine`,
  the noise drawn from ``fold_in(key, step)``), the appearance gradient exact and
  the optax tail of the query step. It sends no query: it measures what an
  estimator whose estimates have that cosine buys at best, in as many steps.

  Example::

    step = make_cosine_step(apply_fn, params, optax.adam(0.1), lam=0.01, cosine=0.1)
    state, metrics = step(init_query_state(jnp.zeros((28, 28, 1)), optax.adam(0.1),
                                           seed=0, validation_size=0), batch)
  """
  true_gradient = make_true_gradient(apply_fn, params, transform=transform,
                                     class_term=class_term)
  update = make_update(optimizer, lam=lam, transform=get_transform(transform), updates=1)

  @jax.jit
  def move(state, images, labels):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    class_grad = estimators.at_cosine(true_gradient(state["noise"], images, labels), key,
                                      cosine)
    moved, appearance, norms = update(state, images, class_grad)
    return moved, {"appearance": appearance, **norms}

  def step(state: QueryState, batch: Batch) -> tuple[QueryState, Metrics]:
    return move(state, *rows_to_send(batch, len(batch["label"])))

  return step


def make_query_step(model: BlackBox, optimizer: optax.GradientTransformation, *, lam: float,
                    options: EstimateOptions = EstimateOptions(),
                    transform: str | Transform = "tanh",
                    class_term: str | losses.ClassTerm = "hinge", images_per_step: int = 0,
                    focus: float = 0.0, prior_gradient: TrueGradient | None = None,
                    true_gradient: TrueGradient | None = None,
                    learning_rate_at: Callable[[QueryState], float] | None = None) -> QueryStep:
  """Returns the host step ``step(state, batch) -> (state, metrics)`` of query-only DFT.

  One call of ``model`` per step, on ``P * B`` probes (``P`` =
  ``options.probes_per_image``); ``B`` is the batch's real images, capped to
  ``images_per_step // P`` if ``images_per_step`` is set. The model is only called,
  on host arrays: nothing differentiates through it.
  ``focus`` (0: off) first scores the batch under the current noise (``B`` more
  images, a second call) and probes only the images whose true class scores below
  ``focus``; settled images add almost nothing to the hinge's gradient but would
  cost ``P`` queries each. The estimate is scaled by the share probed.
  ``prior_gradient`` is the surrogate's ``d C / d noise`` (``options.prior``
  ``"surrogate"``). ``true_gradient`` (a white-box ``d C / d noise``) adds the
  diagnostic metric ``cosine``, the cosine between the estimate and the true
  gradient of ``C``. ``learning_rate_at(state)`` (a query budget's clock, see
  :mod:`dfm.query.budget`) sets the learning rate of a clocked optimizer.

  Metrics: ``loss``, ``class_term`` (mean over the probes), ``appearance``,
  ``accuracy`` (top-1 over the probes), ``grad_norm``, ``noise_l2``,
  ``noise_linf``, ``probed_share``, ``prior_weight``, ``learning_rate`` (clocked),
  and the ledger after the step ``queries_calls``, ``queries_images``,
  ``queries_failures``.
  """
  check_images_per_step(images_per_step, options.probes_per_image)
  if options.prior not in PRIORS:
    raise ValueError(f"Unknown direction prior {options.prior!r}; choose one of {PRIORS}.")
  if options.prior == "surrogate" and prior_gradient is None:
    raise ValueError("prior='surrogate' needs prior_gradient, the surrogate's d C / d noise.")
  if options.prior != "none" and not options.share_directions:
    raise ValueError("A direction prior needs share_directions=True (one prior per batch).")
  transform, class_term = get_transform(transform), losses.get_class_term(class_term)
  perturb_jit = jax.jit(functools.partial(perturb, transform=transform))
  probe = jax.jit(functools.partial(probe_images, options=options, transform=transform))
  update = make_update(optimizer, lam=lam, transform=transform,
                       updates=options.updates_per_estimate)

  @jax.jit
  def finish(state, images, labels, probabilities, directions, share):
    """The update from the probes' scores; ``share`` is the fraction of the batch
    probed (the rest count as settled)."""
    class_grad, values, weight = class_gradient(
        probabilities, labels, directions, options=options, class_term=class_term,
        dimensions=estimators.search_dimensions(state["noise"], options.frequencies))
    class_grad = jax.tree.map(lambda g: share * g, class_grad)
    state, appearance, norms = update(state, images, class_grad)
    correct = jnp.argmax(jnp.nan_to_num(probabilities, nan=-1.0), -1) == jnp.tile(
        labels, values.shape[0])
    metrics = {"loss": values.mean() + lam * appearance, "class_term": values.mean(),
               "appearance": appearance, "accuracy": correct.mean(), "prior_weight": weight,
               **norms}
    return state, metrics

  def unsettled(noise, images, labels) -> tuple[np.ndarray, np.ndarray, float, Spent]:
    """The images whose true class still scores below ``focus`` (at least one)."""
    reply = model.score(np.asarray(perturb_jit(images, noise)))
    true_prob = np.asarray(known_true_class_probability(reply.probabilities, labels))
    keep = true_prob < focus
    keep[np.argmin(true_prob)] = True
    return images[keep], labels[keep], keep.mean(), reply.spent

  def prior_of(state, center, images, labels):
    if options.prior == "previous":
      return state["estimate"]
    return prior_gradient(center, images, labels) if options.prior == "surrogate" else None

  def step(state: QueryState, batch: Batch) -> tuple[QueryState, Metrics]:
    images, labels = rows_to_send(batch, images_per_batch(
        len(batch["label"]), options.probes_per_image, images_per_step))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    center = optax.tree.add_scale(state["noise"], options.lookahead, state["velocity"])
    spent, share = Spent(), 1.0
    state, extra = on_the_clock(state, learning_rate_at)
    try:
      if focus:
        images, labels, share, spent = unsettled(state["noise"], images, labels)
      probes, directions = probe(images, center, key, prior_of(state, center, images, labels))
      reply = model.score(np.asarray(probes))
      spent = spent + reply.spent
      noise_state = {name: state[name] for name in ("noise", "opt", "step", "estimate",
                                                    "velocity")}
      updated, metrics = finish(noise_state, images, labels, reply.probabilities, directions,
                                np.float32(share))
      if true_gradient is not None:
        metrics["cosine"] = estimators.cosine(updated["estimate"],
                                              true_gradient(center, images, labels))
    except BaseException as error:  # Ctrl-C included: what was sent stays counted.
      raise with_ledger(error, state["queries"], spent + spent_of(error))
    queries = add_spent(state["queries"], spent)
    metrics.update(probed_share=share, **extra)
    metrics.update({f"queries_{name}": value for name, value in queries.items()})
    return {**state, **updated, "queries": queries}, metrics

  return step
