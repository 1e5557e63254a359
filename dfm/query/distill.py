"""Query-only DFT through a student distilled from the black box's replies.

Every reply of the black box is a labelled example of what it does: an image (under
the current noise) and its class probabilities. A white-box **student** of the
same task (any model the registry loads, e.g. a small VGG dfm trained on other
data; ``config.query.surrogate``) learns them, and the noise follows the student's
exact gradient. Per step, on a batch ``X`` of ``B`` images:

1. ``p = f(perturb(X, N))``: the black box scores the batch once (``B`` images, ONE call);
2. the pairs ``(perturb(X, N), p)`` join a replay buffer of the last ``R`` pairs;
3. the student ``s`` takes ``student_steps`` Adam steps of the soft cross-entropy
   ``-mean_k sum_c p_kc log softmax(s(x_k))_c`` on random minibatches of the buffer;
4. the noise takes ``updates`` white-box DFT steps through the student on ``X``
   (:func:`dfm.dft.make_update_step`: ``C`` through ``s``, ``A`` exact).

Unlike P-RGF's surrogate prior, the student's errors are corrected by the replies
at the very images the noise is moving, so its gradient follows the black box
where it is being changed. The state is a query state plus ``student`` (params and
optimizer state) and ``replay`` (``images``, ``probabilities``, ``filled``,
``next``), all checkpointed (the buffer with every checkpoint: ``R`` images); the
ledger, budget and selection are :mod:`dfm.query.step`'s. One call per step holds
while ``B`` is at most what the black box takes in one call.

Example::

  step, init = make_distill_step(model, optax.adam(0.3), lam=0.01, student=(apply_fn, params),
                                 image_shape=(28, 28, 1), like=jnp.zeros((28, 28, 1)))
  state, metrics = step(init(seed=0, validation_size=360), batch)
"""
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dfm import losses
from dfm.black_box.base import BlackBox, Spent, add_spent, fill_unknown, spent_of
from dfm.dft import make_update_step
from dfm.query.step import init_query_state, on_the_clock, rows_to_send, with_ledger
from dfm.transform import Transform, get_transform, perturb
from dfm.types import ApplyFn, Batch, Metrics, PyTree, QueryState


FITTED = ("noise", "opt", "step", "student", "replay")  # The state a step changes on the device.


@dataclasses.dataclass(frozen=True)
class StudentOptions:
  """How the student learns: ``steps`` Adam steps at ``lr`` per batch, on
  minibatches of ``batch_size`` from the last ``replay`` replies; the noise then
  takes ``updates`` steps through it."""

  steps: int = 50
  lr: float = 1e-3
  batch_size: int = 128
  replay: int = 4096
  updates: int = 16


def init_replay(image_shape: tuple[int, ...], num_classes: int, size: int) -> dict[str, Any]:
  """An empty replay buffer of ``size`` (image, probabilities) pairs."""
  return {"images": np.zeros((size, *image_shape), np.float32),
          "probabilities": np.zeros((size, num_classes), np.float32),
          "filled": np.asarray(0, np.int32), "next": np.asarray(0, np.int32)}


def add_to_replay(replay: dict[str, Any], images: jax.Array,
                  probabilities: jax.Array) -> dict[str, Any]:
  """The buffer with ``images`` and their ``probabilities`` written over its oldest
  pairs (a ring of ``size`` slots)."""
  size = replay["images"].shape[0]
  slots = (replay["next"] + jnp.arange(images.shape[0])) % size
  return {"images": jnp.asarray(replay["images"]).at[slots].set(images),
          "probabilities": jnp.asarray(replay["probabilities"]).at[slots].set(probabilities),
          "filled": jnp.minimum(replay["filled"] + images.shape[0], size),
          "next": (replay["next"] + images.shape[0]) % size}


def make_distill(student_apply: ApplyFn, options: StudentOptions) -> Callable:
  """``learn(student, replay, key) -> (student, loss)``: ``options.steps`` Adam steps
  of the soft cross-entropy on minibatches drawn from the filled part of ``replay``."""
  optimizer = optax.adam(options.lr)

  def soft_cross_entropy(params, images, probabilities):
    log_q = jax.nn.log_softmax(student_apply(params, images))
    return -jnp.mean(jnp.sum(probabilities * log_q, axis=-1))

  def one_step(student, key, replay):
    rows = jax.random.randint(key, (options.batch_size,), 0, replay["filled"])
    loss, grads = jax.value_and_grad(soft_cross_entropy)(
        student["params"], replay["images"][rows], replay["probabilities"][rows])
    updates, opt = optimizer.update(grads, student["opt"], student["params"])
    return {"params": optax.apply_updates(student["params"], updates), "opt": opt}, loss

  def learn(student, replay, key):
    keys = jax.random.split(key, options.steps)
    return jax.lax.scan(lambda s, k: one_step(s, k, replay), student, keys)

  learn.init = lambda params: {"params": params, "opt": optimizer.init(params)}
  return learn


def make_distill_step(model: BlackBox, optimizer: optax.GradientTransformation, *,
                      lam: float, student: tuple[ApplyFn, PyTree],
                      image_shape: tuple[int, ...], like: PyTree,
                      options: StudentOptions = StudentOptions(),
                      transform: str | Transform = "tanh",
                      class_term: str | losses.ClassTerm = "hinge",
                      learning_rate_at: Callable[[QueryState], float] | None = None
                      ) -> tuple[Callable, Callable]:
  """``(step, init)``: ``step(state, batch) -> (state, metrics)`` (module docstring)
  and ``init(seed, validation_size) -> state`` (the zero noise shaped like ``like``,
  the student at ``student``'s params, an empty buffer).

  ``learning_rate_at(state)`` (the budget's clock) sets the noise's learning rate.
  Metrics: ``loss``, ``class_term`` and ``appearance`` (through the student, at the
  last update, before it), ``accuracy`` (the black box's, on the batch before them),
  ``distill_loss`` (the student's last soft cross-entropy), ``grad_norm``,
  ``noise_l2``, ``noise_linf``, ``learning_rate`` (clocked) and the ledger.
  """
  student_apply, student_params = student
  transform = get_transform(transform)
  learn = make_distill(student_apply, options)
  dft_step = make_update_step(student_apply, optimizer, lam=lam, transform=transform,
                              class_term=class_term)

  @jax.jit
  def perturbed(images, noise):
    return perturb(images, noise, transform=transform)

  @jax.jit
  def fit(parts, images, labels, sent, probabilities, key):
    """``parts``: the state's noise, opt, step, student and replay (what a step changes)."""
    replay = add_to_replay(parts["replay"], sent, probabilities)
    taught, distill_losses = learn(parts["student"], replay, key)
    noise_state = {name: parts[name] for name in ("noise", "opt", "step")}
    batch = {"image": images, "label": labels}
    noise_state, metrics = jax.lax.scan(
        lambda s, _: dft_step(s, taught["params"], batch), noise_state, None,
        length=options.updates)
    accuracy = jnp.mean(jnp.argmax(probabilities, -1) == labels)
    metrics = {**jax.tree.map(lambda m: m[-1], metrics), "accuracy": accuracy,
               "distill_loss": distill_losses[-1]}
    return {**noise_state, "student": taught, "replay": replay}, metrics

  def init(seed: int, validation_size: int) -> QueryState:
    state = init_query_state(jax.tree.map(jnp.zeros_like, like), optimizer, seed=seed,
                             validation_size=validation_size)
    return {**state, "student": learn.init(student_params),
            "replay": init_replay(image_shape, model.num_classes, options.replay)}

  def step(state: QueryState, batch: Batch) -> tuple[QueryState, Metrics]:
    images, labels = rows_to_send(batch, len(batch["label"]))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    spent = Spent()
    state, extra = on_the_clock(state, learning_rate_at)
    try:
      sent = perturbed(images, state["noise"])
      reply = model.score(np.asarray(sent))
      spent = reply.spent
      parts, metrics = fit({name: state[name] for name in FITTED}, images, labels, sent,
                           fill_unknown(reply.probabilities), key)
    except BaseException as error:  # Ctrl-C included: what was sent stays counted.
      raise with_ledger(error, state["queries"], spent + spent_of(error))
    state = {**state, **parts}
    queries = add_spent(state["queries"], spent)
    metrics.update(extra)
    metrics.update({f"queries_{name}": value for name, value in queries.items()})
    return {**state, "queries": queries}, metrics

  return step, init
